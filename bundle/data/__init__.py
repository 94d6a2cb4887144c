"""Data: the dataset folder layout, datalists, and the synthetic phantoms, lesions and demo dataset.

- :mod:`bundle.data.layout`: where images, masks and derived files live in a dataset folder.
- :mod:`bundle.data.datalist`: decathlon-style datalists from that layout, a CSV or a JSON.
- :mod:`bundle.data.phantoms`, :mod:`bundle.data.lesions`, :mod:`bundle.data.fields`: synthetic chest X-ray
  phantoms with exact lung maps, the independent "disease" opacities of the demo test set, shared noise fields.
- :mod:`bundle.data.demo`: the demo dataset written from the phantoms on first use.
"""

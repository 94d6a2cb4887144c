"""Small networks, batches and trainers shared by the training unit tests (engine, handlers, validation)."""

from __future__ import annotations

import torch
from monai.engines import SupervisedTrainer
from monai.networks.nets import UNet

from bundle.training.engine import ARTASynIteration, prepare_artasyn_batch


def tiny_unet():
    return UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


def group_batch(n_images=2, variants=(2, 1), size=16, with_healthy=True, seed=0):
    """A flattened batch like list_data_collate makes it: per image [healthy copy,] variants..."""
    g = torch.Generator().manual_seed(seed)
    images, targets, masks = [], [], []
    for i in range(n_images):
        healthy = torch.rand(1, size, size, generator=g) * 0.5
        if with_healthy:
            images.append(healthy.clone()), targets.append(healthy.clone()), masks.append(torch.zeros_like(healthy))
        for _ in range(variants[i]):
            m = (torch.rand(1, size, size, generator=g) > 0.8).float()
            images.append(healthy + 0.3 * m), targets.append(healthy.clone()), masks.append(m)
    return {"image": torch.stack(images), "target": torch.stack(targets), "anomaly_mask": torch.stack(masks)}


def trainer_for(net, loss, batches, epochs=1, handlers=None):
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=batches,
        network=net,
        optimizer=torch.optim.AdamW(net.parameters(), lr=1e-3),
        loss_function=loss,
        prepare_batch=prepare_artasyn_batch,
        iteration_update=ARTASynIteration(),
        train_handlers=handlers,
        decollate=False,
    )


class RemovesBright(torch.nn.Module):
    """Stand-in reconstruction network: keeps pixels below 0.25 and zeroes the rest (it "removes" bright things)."""

    def forward(self, x):
        return x * (x < 0.25)


def selection_batches():
    """Healthy images with a bright strip outside the lungs (normal anatomy the network cannot rebuild, brighter
    from image to image) and diseased images with a faint strip and a small lesion inside the lungs."""
    n, size = 4, 16
    image = torch.full((2 * n, 1, size, size), 0.1)
    lung = torch.zeros_like(image)
    lung[:, :, 4:12, 2:14] = 1
    mask = torch.zeros_like(image)
    for i in range(n):
        image[i, :, :2] = 0.6 + 0.12 * i  # healthy: error outside the lungs only
        image[n + i, :, :2] = 0.3
        image[n + i, :, 6:8, 6:8] = 0.9  # diseased: a 2 x 2 lesion in the lungs
        mask[n + i, :, 6:8, 6:8] = 1
    labels = torch.tensor([0] * n + [1] * n)
    batch = {"image": image, "lung": lung, "mask": mask, "label": labels, "has_mask": labels.clone()}
    return [{k: v[:n] for k, v in batch.items()}, {k: v[n:] for k, v in batch.items()}]

"""Training settings' choices and the group level's defaults: one home, light to import (the CLI
parser reads it before TensorFlow is loaded; :class:`~lumbo_bids.training.trainer.TrainConfig`
and :class:`~lumbo_bids.config.Config` take their defaults from here)."""

from __future__ import annotations

#: allowed values of the categorical training settings
CHOICES: dict[str, tuple[str, ...]] = {
    "loss": ("dice", "dice_bce"),
    "freeze": ("none", "encoder", "all_but_last"),
    "lr_schedule": ("cosine", "plateau", "constant"),
    "task": ("segmentation", "localisation"),
    "thick_axes": ("axial", "any", "mostly_sagittal", "balanced"),
}

#: fine-tuning defaults of the group level (command line, config file and TrainConfig)
EPOCHS = 30
STEPS_PER_EPOCH = 50
BATCH_SIZE = 4
LEARNING_RATE = 1e-4
LOSS = "dice"
PATIENCE = 10
AUGMENTATION = 1.0
VALIDATION_FRACTION = 0.25

#: localiser fine-tuning at the group level (a few short epochs from the shipped localiser)
LOCALISER_EPOCHS = 5
LOCALISER_STEPS_PER_EPOCH = 20
LOCALISER_LEARNING_RATE = 3e-4

#: memory (GB) that Nipype reserves for a node running a network (segment, localise: TensorFlow
#: and the model; a participant run peaks at about 1.3 GB on the example dataset), and the smallest
#: ``--mem`` accepted: less cannot run such a node, and below 0.01 GB Nipype's scheduler would
#: start no node at all and wait for ever
MODEL_NODE_MEM_GB = 2.0

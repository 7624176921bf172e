"""The algorithm: networks, losses, augmentation, the SAC-AE update, the policy."""

"""The paper's castle-walls numbers (talk slides in the shared seeds; PAPER.md "The numbers to compare
against"), each with its source."""


# CD AUROC on ImageNette with SD v1.4, (training set, generation set), keyed by (trigger, p).
# Source: slides, "Castle walls: backdoor detection is easier on generations". The slides give CD only.
PAPER_CD_AUROC = {
    ("badnets1", 0.01): (0.966, 0.972), ("badnets1", 0.05): (0.956, 0.970), ("badnets1", 0.10): (0.948, 0.983),
    ("badnets2", 0.01): (0.553, 0.581), ("badnets2", 0.05): (0.561, 0.766), ("badnets2", 0.10): (0.584, 0.723),
}

# Classifier trained on the poisoned training set -> on the poisoned DM's generations, in %.
# Source: slides, "Castle walls: training on generations" (ImageNette and Caltech15: TA and ASR).
PAPER_TRAIN_ON_GEN = {
    "imagenette": {
        ("badnets1", 0.01): {"TA": (99.44, 96.92), "ASR": (87.10, 0.65)},
        ("badnets1", 0.02): {"TA": (99.44, 93.63), "ASR": (98.25, 14.48)},
        ("badnets1", 0.05): {"TA": (99.39, 94.45), "ASR": (99.43, 55.60)},
        ("badnets2", 0.01): {"TA": (99.31, 96.51), "ASR": (64.62, 1.36)},
        ("badnets2", 0.02): {"TA": (99.31, 93.73), "ASR": (85.52, 8.46)},
        ("badnets2", 0.05): {"TA": (99.26, 94.73), "ASR": (96.32, 10.44)},
    },
    "caltech15": {
        ("badnets1", 0.01): {"TA": (99.833, 90.667), "ASR": (95.54, 1.25)},
        ("badnets1", 0.02): {"TA": (99.833, 88.500), "ASR": (99.11, 8.39)},
        ("badnets1", 0.05): {"TA": (99.667, 89.166), "ASR": (99.82, 9.64)},
        ("badnets2", 0.01): {"TA": (99.833, 91.000), "ASR": (83.04, 47.68)},
        ("badnets2", 0.02): {"TA": (99.833, 87.833), "ASR": (91.25, 47.14)},
        ("badnets2", 0.05): {"TA": (99.833, 87.333), "ASR": (95.89, 64.82)},
    },
}

# Diffusion classifier vs ResNet-18 on CIFAR-10 (BadNets), in %, keyed by p; DC keyed by p_filter.
# Source: slides, "Castle walls: diffusion classifiers are robust". TA is given at p_filter 0 and 10 % only.
PAPER_DC = {
    "resnet18": {0.01: {"TA": 94.85, "ASR": 99.40}, 0.05: {"TA": 94.61, "ASR": 100.0},
                 0.10: {"TA": 94.08, "ASR": 100.0}},
    "dc": {
        0.0: {0.01: {"TA": 95.56, "ASR": 62.38}, 0.05: {"TA": 94.83, "ASR": 97.04}, 0.10: {"TA": 94.71, "ASR": 98.57}},
        0.01: {0.01: {"ASR": 23.57}, 0.05: {"ASR": 68.86}, 0.10: {"ASR": 75.77}},
        0.05: {0.01: {"ASR": 15.00}, 0.05: {"ASR": 45.43}, 0.10: {"ASR": 52.82}},
        0.1: {0.01: {"TA": 92.32, "ASR": 13.62}, 0.05: {"TA": 91.78, "ASR": 39.00}, 0.10: {"TA": 90.87, "ASR": 45.66}},
    },
}


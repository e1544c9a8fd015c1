"""Stage 2: the multi-task 3D network, its losses and trainer (MODEL_SPEC 4-7)."""

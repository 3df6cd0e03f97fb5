"""Constants shared by every backend of an op (mode names and their kernel codes)."""

# camfast::grad_weighted_map modes; codes match GwmMode in csrc/common.h.
GWM_MODES = {"zoom": 0, "gradcam": 1, "layercam": 2}

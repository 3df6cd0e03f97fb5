"""Constants shared by every backend of an op (mode names and their kernel codes)."""

# camfast::grad_weighted_map modes; codes match GwmMode in csrc/common.h.
GWM_MODES = {"zoom": 0, "gradcam": 1, "layercam": 2}

# camfast::upsample_aggregate options; codes match UaReduce / UaNormalize in
# csrc/upsample_aggregate.h.
UA_REDUCES = {"max": 0, "mean": 1, "sum": 2}
UA_NORMALIZES = {"minmax": 0, "none": 1}
#: Epsilon of the min-max normalisation ``(M - min) / (max - min + UA_EPS)``; fixed.
UA_EPS = 1e-7
#: Most layers one call takes: the CUDA kernels receive the layer table as a kernel
#: argument (4 KiB limit), and Triton specialises on the number of layers.
UA_MAX_LAYERS = 64

# camfast::guided_filter borders; codes match BoxBorder in csrc/box_filter.h.
GF_BORDERS = {"truncate": 0, "reflect": 1}

"""FVQ-20K-format datasets, the synthetic corpus generator, Stage I/II training and evaluation."""

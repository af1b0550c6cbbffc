"""What lottery_rg knows about networks: model families (prunable tensors, blocks, stages, how to save and
build a model of that library), the CIFAR ResNets registered in timm, and loading a model by name."""

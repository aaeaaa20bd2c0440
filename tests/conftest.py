import torch

# Two cores, several test processes: keep torch from oversubscribing them.
torch.set_num_threads(1)

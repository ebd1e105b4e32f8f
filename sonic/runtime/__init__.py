"""The distributed runtime: agents on VMs, the coordinator that drives them, the data plane."""

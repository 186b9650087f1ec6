"""Parallelism: logical axis names → mesh axes (`logical_axes`), the device mesh and the
shardings of parameters, optimizer state and batches (`sharding`). The model only names its
dimensions; this package decides where they live."""

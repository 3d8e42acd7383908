"""The transport-free core: model repository, scheduling, statistics and the data plane that REST and gRPC call."""

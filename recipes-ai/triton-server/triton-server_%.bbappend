# meta-tegra-community builds "logging http gpu tensorrt": the appliance drives Triton over
# gRPC and scrapes its metrics. Only with the ml-inference distro feature, so the layer
# changes nothing for anyone else.
PACKAGECONFIG:append:ml-inference = " grpc metrics"

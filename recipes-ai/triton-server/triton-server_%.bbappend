# meta-tegra-community builds "logging http gpu tensorrt": the appliance drives Triton over
# gRPC and scrapes its metrics. Only under the ml-inference distro override, so the layer
# changes nothing for anyone else.
PACKAGECONFIG:append:ml-inference = " grpc metrics"

# The appliance uses tritonclient.grpc as well as tritonclient.http. Only with the
# ml-inference distro override, so the layer changes nothing for anyone else.
PACKAGECONFIG:append:ml-inference = " python_grpc"
RDEPENDS:${PN}:append:ml-inference = " \
    python3-grpcio \
    python3-numpy \
    python3-protobuf \
"

# The appliance uses tritonclient.grpc as well as tritonclient.http.
PACKAGECONFIG:append = " python_grpc"

RDEPENDS:${PN}:append = " \
    python3-grpcio \
    python3-numpy \
    python3-protobuf \
"

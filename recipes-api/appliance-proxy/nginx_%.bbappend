# The appliance's nginx, only under the ml-inference distro override, so the layer changes nothing for
# anyone else. HTTP/2, which gRPC through nginx needs (nginx builds its grpc module only with http_v2; the
# recipe's default PACKAGECONFIG has neither). No default site: meta-webserver's default_server serves
# files on port 80, where appliance-proxy's own server answers only with a redirect to https.
PACKAGECONFIG:append:ml-inference = " http2"

# nooelint: oelint.func.specific - ml-inference is the inference distro's DISTROOVERRIDES entry, not a DISTRO name
do_install:append:ml-inference() {
    rm -f ${D}${sysconfdir}/nginx/sites-enabled/default_server
}

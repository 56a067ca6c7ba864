#!/bin/sh
# Regenerates the test certificates (test-only keys, valid for 100 years): a CA,
# a server certificate it signed for 127.0.0.1 and localhost, and an unrelated
# CA for the "untrusted" case. Run from this directory; needs openssl.
set -eu
ca() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1-key.pem"
    openssl req -x509 -new -key "$1-key.pem" -subj "/CN=$2" -days 36500 -sha256 \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        -out "$1.pem"
}
ca ca "ductile test CA"
ca other-ca "ductile unrelated test CA"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server-key.pem
openssl req -new -key server-key.pem -subj "/CN=127.0.0.1" -out server.csr
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 36500 -sha256 \
    -extfile server.ext -out server.pem
rm -f server.csr server.ext ca.srl ca-key.pem other-ca-key.pem

#!/usr/bin/env bash
# Generate Go and Java stubs from protos/ and build the example callers, offline, with
# Debian's toolchain only (no Go module proxy, no Maven repository):
#   apt-get install -y --no-install-recommends protobuf-compiler golang-go \
#       golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev \
#       protoc-gen-go protoc-gen-go-grpc default-jdk-headless libgrpc-java libprotobuf-java \
#       libnetty-java libperfmark-java libgeronimo-annotation-1.3-spec-java \
#       protobuf-compiler-grpc-java-plugin libgoogle-common-protos-java
# (the proto's google.api.http options: Go finds them in golang-google-genproto-dev, which
# golang-google-grpc-dev pulls in; Java in proto-google-common-protos.jar)
# Outputs (all under gen/, which git ignores):
#   gen/go/imgate/v1/*.go          Go stubs      gen/bin/sendbatch-go   the Go caller
#   gen/java/io/imgate/v1/*.java   Java stubs    gen/java-classes/      compiled stubs + caller
#   gen/java.classpath             the classpath to run it:
#       java -cp "$(cat gen/java.classpath)" io.imgate.examples.SendBatch HOST:PORT IDS TEXT
# Usage: scripts/build_polyglot.sh [go] [java]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(go java)

for lang in "${wanted[@]}"; do
  case "$lang" in
  go)
    rm -rf gen/go && mkdir -p gen/go gen/bin
    protoc -I protos --go_out=gen/go --go_opt=paths=source_relative \
      --go-grpc_out=gen/go --go-grpc_opt=paths=source_relative protos/imgate/v1/gateway.proto
    # GOPATH mode over Debian's Go sources (/usr/share/gocode): the repository appears at
    # its import path github.com/imgate/imgate through a symlink.
    gopath=$root/gen/gopath
    mkdir -p "$gopath/src/github.com/imgate"
    ln -sfn "$root" "$gopath/src/github.com/imgate/imgate"
    (
      cd "$gopath/src/github.com/imgate/imgate"
      export PWD="$gopath/src/github.com/imgate/imgate"
      GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$gopath:/usr/share/gocode" \
        GOCACHE="${GOCACHE:-$root/gen/gocache}" \
        go build -o "$root/gen/bin/sendbatch-go" ./examples/go
    )
    echo "built gen/bin/sendbatch-go"
    ;;
  java)
    rm -rf gen/java gen/java-classes && mkdir -p gen/java gen/java-classes
    plugin=$(command -v protoc-gen-grpc-java || command -v grpc_java_plugin)
    protoc -I protos --plugin=protoc-gen-grpc-java="$plugin" \
      --java_out=gen/java --grpc-java_out=gen/java protos/imgate/v1/gateway.proto
    jars=(grpc-api grpc-core grpc-netty grpc-stub grpc-protobuf grpc-protobuf-lite grpc-context
      protobuf proto-google-common-protos guava perfmark-api geronimo-annotation-1.3-spec error-prone-annotations jsr305
      netty-common netty-buffer netty-transport netty-codec netty-codec-http netty-codec-http2
      netty-handler netty-resolver netty-codec-socks netty-handler-proxy)
    classpath=""
    for jar in "${jars[@]}"; do
      [ -f "/usr/share/java/$jar.jar" ] || { echo "missing /usr/share/java/$jar.jar" >&2; exit 1; }
      classpath="$classpath:/usr/share/java/$jar.jar"
    done
    javac -nowarn -d gen/java-classes -cp "${classpath#:}" \
      $(find gen/java examples/java -name '*.java')
    echo "$root/gen/java-classes$classpath" > gen/java.classpath
    echo "built gen/java-classes (run with: java -cp \"\$(cat gen/java.classpath)\" io.imgate.examples.SendBatch ...)"
    ;;
  *) echo "unknown language $lang (go, java)" >&2; exit 2 ;;
  esac
done

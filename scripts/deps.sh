# Sourced by scripts/*: installs the Debian packages lockgraph needs, once.
# Every dependency comes from Debian's packages; nothing else is downloaded.

LOCKGRAPH_BUILD_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  libboost-graph-dev libgtest-dev libgmock-dev librapidcheck-dev libbenchmark-dev
  libzmq3-dev cppzmq-dev libcereal-dev rapidjson-dev libspdlog-dev libcli11-dev libtomlplusplus-dev
  libhiredis-dev libcpp-httplib-dev
  python3 python3-zmq
)

# lockgraph_install_missing PKG...: apt-get installs whichever of PKG are missing,
# with one `apt-get update` first; does nothing when all are present.
lockgraph_install_missing() {
  local missing=()
  local p
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "lockgraph: installing missing packages: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# lockgraph_configure BUILD_DIR BUILD_TYPE [cmake args...]
lockgraph_configure() {
  local dir=$1 type=$2
  shift 2
  cmake -S "$LOCKGRAPH_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" "$@" >/dev/null
}

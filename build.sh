#!/usr/bin/env bash
# build.sh: builds the Clump node image and runs the project's checks.
#
#   ./build.sh [all]                 iso + pxe + manifest.json into out/
#   ./build.sh iso [--kernel custom] out/clump.iso (hybrid BIOS/UEFI CD and USB image)
#   ./build.sh pxe [--kernel custom] out/pxe/ (vmlinuz, initrd.img, boot.ipxe, pxelinux)
#   ./build.sh check-kernel [CONFIG] checks a kernel config against kernel-config/clump.config
#   ./build.sh kernel [--config-only] builds a custom kernel from Debian's linux-source (hours)
#   ./build.sh test                  fmt, clippy, unit tests, fuzzing, image, e2e boot tests
#   ./build.sh fuzz [--seconds N] [TARGET...]  runs the fuzz targets (fuzz/README.md), N s each
#   ./build.sh demo                  builds, then boots one node in QEMU (out/demo/)
#   ./build.sh clean [--all]         removes out/ (--all: the download cache too)
#   all, iso, pxe, test, demo also take --key FILE: the cluster key (64 hex digits) to put in the
#   image; without it out/cluster.key is used, and generated (0600) the first time.
#
# The kernel and the userland in the image come from Debian packages (apt-get download + dpkg-deb -x,
# never installed on the host), cached in ${CLUMP_CACHE:-~/.cache/clump}. Build tools are installed
# with apt-get when missing. See ARCHITECTURE.md for the layout of the image.
set -euo pipefail
shopt -s nullglob inherit_errexit
umask 022

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=$ROOT/out
CACHE=${CLUMP_CACHE:-$HOME/.cache/clump}
DEBS=$CACHE/debs
EXTRACT=$CACHE/extract
TARGET=x86_64-unknown-linux-gnu
CMDLINE="console=tty0 console=ttyS0,115200 quiet loglevel=3 panic=10"
VOLID=CLUMP
# Oldest CRIU accepted (bookworm's point release with the fixes we need).
CRIU_MIN_VERSION=3.17.1-2+deb12u2
# Initramfs compression. zstd -19: the kernel unpacks it in 1.0 s under TCG where xz takes 4.1 s, for
# 1.3 MB more (BENCHMARKS.md). xz is there for the smallest image (CLUMP_COMPRESSION=xz).
COMPRESSION=${CLUMP_COMPRESSION:-zstd}

# Host tools per task (Debian package names).
PKGS_IMAGE=(cpio kmod xz-utils zstd binutils jq python3 xorriso grub-pc-bin grub-efi-amd64-bin grub-common mtools)
PKGS_TEST=(qemu-system-x86 ovmf ipxe-qemu dnsmasq-base iproute2 tmux nftables)
PKGS_KERNEL=(build-essential bc bison flex libelf-dev libssl-dev rsync python3)

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 1700000000)}
export LC_ALL=C

KERNEL_FLAVOUR=debian   # or custom (--kernel custom)
KEY_FILE=                # --key FILE; empty: out/cluster.key (generated if missing)
APT_UPDATED=0
declare -A PKG_VERSION=()   # Debian package -> version used in this build
declare -A PKG_ROLE=()      # Debian package -> what it was used for

# ------------------------------------------------------------------------------------------------
# helpers

if [[ -t 2 ]]; then
    B=$'\033[1m' R=$'\033[31m' Y=$'\033[33m' N=$'\033[0m'
else
    B='' R='' Y='' N=''
fi
log() { printf '%s==> %s%s\n' "$B" "$*" "$N" >&2; }
info() { printf '    %s\n' "$*" >&2; }
warn() { printf '%swarning:%s %s\n' "$Y" "$N" "$*" >&2; }
die() {
    printf '%serror:%s %s\n' "$R" "$N" "$*" >&2
    exit 1
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

usage() { sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

# Runs a function with a header and its duration.
step() {
    local name=$1 t0
    shift
    t0=$(now)
    log "$name"
    "$@"
    info "$name: done in $(elapsed "$t0")"
}

need_root() {
    [[ $EUID -eq 0 ]] || die "$1 needs root (run: sudo ./build.sh ${ARGS[*]})"
}

apt_update() {
    ((APT_UPDATED)) && return 0
    need_root "apt-get update"
    log "apt-get update"
    # Third-party sources on a developer's machine may be unreachable: Debian's own lists are what
    # matter, and a missing package is reported below by name.
    apt-get update -q || warn "apt-get update reported errors; continuing with the lists it got"
    APT_UPDATED=1
}

# Installs the Debian packages given that are not installed yet (dpkg-query first: a second run is fast).
ensure_packages() {
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    need_root "installing ${missing[*]}"
    apt_update
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" ||
        die "could not install host packages: ${missing[*]}"
}

ensure_cargo() {
    if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then
        export PATH=$HOME/.cargo/bin:$PATH
    fi
    command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) and put cargo on PATH"
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }
filesize() { stat -c %s "$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }

# ------------------------------------------------------------------------------------------------
# Debian packages: resolve, download (cached), extract (cached)

# Fills PKG_VERSION with the candidate version of each package given (one apt-cache call; the apt
# lists are updated once if a package is unknown).
resolve_versions() {
    local todo=() p v attempt
    for p in "$@"; do [[ -n ${PKG_VERSION[$p]:-} ]] || todo+=("$p"); done
    ((${#todo[@]})) || return 0
    for attempt in 1 2; do
        while read -r p v; do
            [[ $v != "(none)" ]] && PKG_VERSION[$p]=$v
        done < <(apt-cache policy "${todo[@]}" 2>/dev/null |
            awk '/^[^ ].*:$/ { sub(/:$/, ""); sub(/:amd64$/, ""); pkg = $0 } /^  Candidate:/ { print pkg, $2 }')
        local missing=()
        for p in "${todo[@]}"; do [[ -n ${PKG_VERSION[$p]:-} ]] || missing+=("$p"); done
        ((${#missing[@]})) || return 0
        ((attempt == 1)) && apt_update
    done
    die "Debian package(s) not found in the apt lists: ${missing[*]} (check /etc/apt/sources.list)"
}

candidate_version() {
    resolve_versions "$1"
    echo "${PKG_VERSION[$1]}"
}

deb_file() { # pkg version -> path of the cached .deb (may not exist yet)
    local f=("$DEBS/${1}_${2//:/%3a}_"*.deb)
    if ((${#f[@]})); then echo "${f[0]}"; else echo "$DEBS/${1}_${2//:/%3a}_amd64.deb"; fi
}

# Resolves and downloads the packages given (into the cache, once); records their versions.
fetch_debs() {
    local role=$1 pkg ver want=()
    shift
    mkdir -p "$DEBS"
    resolve_versions "$@"
    for pkg in "$@"; do
        [[ -n ${PKG_ROLE[$pkg]:-} ]] || PKG_ROLE[$pkg]=$role
        [[ -s $(deb_file "$pkg" "${PKG_VERSION[$pkg]}") ]] || want+=("$pkg=${PKG_VERSION[$pkg]}")
    done
    ((${#want[@]})) || return 0
    info "apt-get download ${want[*]}"
    (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "${want[@]}" >&2) ||
        die "apt-get download failed for: ${want[*]}"
}

# Extracts a downloaded package into the cache (once) and prints the directory.
extract_deb() {
    local pkg=$1 deb dir
    deb=$(deb_file "$pkg" "${PKG_VERSION[$pkg]:?$pkg was not fetched}")
    [[ -s $deb ]] || die "$deb is missing"
    dir=$EXTRACT/$(basename "$deb" .deb)
    if [[ ! -e $dir/.extracted ]]; then
        rm -rf "${dir:?}"
        mkdir -p "$dir"
        dpkg-deb -x "$deb" "$dir" || die "dpkg-deb -x $deb failed"
        touch "$dir/.extracted"
    fi
    echo "$dir"
}

# Direct dependencies (Depends/PreDepends, first alternative) of the packages given, real names only.
deb_depends() {
    apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
        --no-enhances "$@" 2>/dev/null |
        awk '$1 == "Depends:" || $1 == "|Depends:" || $1 == "PreDepends:" { print $2 }' |
        grep -v '^<' | sed 's/:any$//' | sort -u
}

# ------------------------------------------------------------------------------------------------
# Step 1: our static binaries

build_binaries() {
    ensure_cargo
    (cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --locked --target "$TARGET" -p clump-init -p clump-cli -p clump-netd \
            -p clump-clumpd -p clump-screend -p clump-workload) ||
        die "cargo build of clump-init/clump-cli/clump-netd/clump-clumpd/clump-screend/clump-workload failed"
    BIN_DIR=$ROOT/target/$TARGET/release
    local b
    for b in init clump clump-netd clumpd clump-screend clump-work; do
        [[ -x $BIN_DIR/$b ]] || die "$BIN_DIR/$b was not built"
        if readelf -l "$BIN_DIR/$b" | grep -q 'Requesting program interpreter'; then
            die "$BIN_DIR/$b is dynamically linked (RUSTFLAGS crt-static not applied?)"
        fi
    done
}

# ------------------------------------------------------------------------------------------------
# The cluster key (ARCHITECTURE.md, "The cluster key"): 256 bits as 64 hex digits. Never printed;
# only its fingerprint is shown and recorded in manifest.json.

# Reads a key file: 64 hex digits, surrounding whitespace allowed. Prints the key in lower case.
read_key_file() {
    local file=$1 shown=$2 text
    [[ -f $file && -r $file ]] || die "cluster key $shown: no such readable file"
    text=$(tr -d ' \t\r\n' <"$file")
    if [[ ! $text =~ ^[0-9a-fA-F]{64}$ ]]; then
        local what="${#text} characters"
        [[ ${#text} == 64 ]] && what="64 characters, not all hex digits"
        die "cluster key $shown: expected exactly 64 hex digits (a 256-bit key), the file holds $what" \
            "(make one with: od -An -v -tx1 -N32 /dev/urandom | tr -d ' \\n' >FILE)"
    fi
    printf '%s\n' "${text,,}"
}

# First 8 hex digits of HKDF-SHA256(ikm = key, salt = "clump-v1", info = "clump fingerprint v1", L = 32)
# (RFC 5869: PRK = HMAC(salt, ikm), OKM = T(1) = HMAC(PRK, info || 0x01)). The key goes on stdin.
key_fingerprint() {
    python3 -c '
import hashlib, hmac, sys
key = bytes.fromhex(sys.stdin.read().strip())
prk = hmac.new(b"clump-v1", key, hashlib.sha256).digest()
okm = hmac.new(prk, b"clump fingerprint v1" + b"\x01", hashlib.sha256).digest()
print(okm.hex()[:8])
' <<<"$1" || die "python3 could not compute the key fingerprint"
}

# Sets CLUSTER_KEY and CLUSTER_KEY_FINGERPRINT from --key FILE, else out/cluster.key, which is
# generated (32 bytes of /dev/urandom, mode 0600) when it does not exist yet.
resolve_cluster_key() {
    local file shown
    if [[ -n $KEY_FILE ]]; then
        file=$KEY_FILE
        shown=$KEY_FILE
    else
        file=$OUT/cluster.key
        shown=out/cluster.key
        if [[ ! -e $file ]]; then
            local fresh
            fresh=$(od -An -v -tx1 -N32 /dev/urandom | tr -d ' \n')
            [[ $fresh =~ ^[0-9a-f]{64}$ ]] || die "could not read 32 random bytes from /dev/urandom"
            (umask 077 && printf '%s\n' "$fresh" >"$file.tmp") && mv "$file.tmp" "$file"
            info "generated a new cluster key in $shown (keep it: nodes with another key are refused)"
        fi
        chmod 0600 "$file"
    fi
    CLUSTER_KEY=$(read_key_file "$file" "$shown")
    CLUSTER_KEY_FINGERPRINT=$(key_fingerprint "$CLUSTER_KEY")
    [[ $CLUSTER_KEY_FINGERPRINT =~ ^[0-9a-f]{8}$ ]] || die "bad key fingerprint '$CLUSTER_KEY_FINGERPRINT'"
    log "cluster key: $shown (fingerprint $CLUSTER_KEY_FINGERPRINT)"
}

# ------------------------------------------------------------------------------------------------
# Step 2: the kernel and the userland from Debian

resolve_kernel() {
    if [[ $KERNEL_FLAVOUR == custom ]]; then
        local c=$CACHE/kernel/custom
        [[ -e $c/.built ]] || die "no custom kernel in $c: run ./build.sh kernel first"
        KVER=$(cat "$c/kver")
        KERNEL_IMAGE=$c/vmlinuz
        KERNEL_CONFIG=$c/config
        KERNEL_MODROOT=$c/root
        KERNEL_PKG="custom (linux-source $(cat "$c/source-version"))"
        return 0
    fi
    local meta=linux-image-amd64 dep
    dep=$(apt-cache depends "$meta=$(candidate_version "$meta")" 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
    [[ -n $dep ]] || die "cannot resolve which kernel package $meta depends on"
    KERNEL_PKG=$dep
    fetch_debs "kernel" "$KERNEL_PKG"
    local x
    x=$(extract_deb "$KERNEL_PKG")
    KVER=${KERNEL_PKG#linux-image-}
    KERNEL_IMAGE=$x/boot/vmlinuz-$KVER
    KERNEL_CONFIG=$x/boot/config-$KVER
    KERNEL_MODROOT=$x
    [[ -f $KERNEL_IMAGE && -d $KERNEL_MODROOT/lib/modules/$KVER ]] || die "unexpected layout in $KERNEL_PKG"
}

fetch_userland() {
    fetch_debs "shell and tools (/bin/busybox)" busybox-static
    BUSYBOX_DIR=$(extract_deb busybox-static)

    fetch_debs "checkpoint/restore (/usr/sbin/criu)" criu
    dpkg --compare-versions "${PKG_VERSION[criu]}" ge "$CRIU_MIN_VERSION" ||
        die "criu ${PKG_VERSION[criu]} is older than $CRIU_MIN_VERSION"
    CRIU_DIR=$(extract_deb criu)

    # criu's shared libraries: the library packages in its dependency tree (Debian metadata says which
    # packages; the ELF NEEDED entries below say which files are really used).
    # Walked level by level: one apt-cache call per level.
    local level=() next=() seen=() pkg dep
    declare -A seen_set=()
    mapfile -t level < <(deb_depends criu | grep '^lib')
    while ((${#level[@]})); do
        next=()
        for pkg in "${level[@]}"; do
            [[ -n ${seen_set[$pkg]:-} ]] && continue
            seen_set[$pkg]=1
            seen+=("$pkg")
            next+=("$pkg")
        done
        ((${#next[@]})) || break
        mapfile -t level < <(deb_depends "${next[@]}" | grep '^lib')
    done
    fetch_debs "library candidates for criu" "${seen[@]}"
    LIB_PKGS=("${seen[@]}")
    # We do not use these packages unless a library of theirs ends up in the image (see stage_criu).
    for pkg in "${seen[@]}"; do unset "PKG_ROLE[$pkg]"; done

    fetch_debs "PXE boot loader (pxelinux.0)" pxelinux
    fetch_debs "PXE boot loader (ldlinux.c32)" syslinux-common
    fetch_debs "PXE chain loaders (undionly.kpxe, snponly.efi)" ipxe
}

# ------------------------------------------------------------------------------------------------
# Step 3: the root file system

stage_rootfs() {
    ROOTFS=$OUT/rootfs
    rm -rf "${ROOTFS:?}"
    mkdir -p "$ROOTFS"
    (cd "$ROOTFS" && mkdir -p bin usr/sbin lib/x86_64-linux-gnu lib64 etc/clump proc sys dev run tmp root var/lib)
    chmod 1777 "$ROOTFS/tmp"
    chmod 0700 "$ROOTFS/root"
    # Scripts and the kernel's usermode helper (/sbin/modprobe) find the busybox applets here too.
    ln -s bin "$ROOTFS/sbin"
    ln -s ../bin "$ROOTFS/usr/bin"

    install -m 0755 "$BIN_DIR/init" "$ROOTFS/init"
    install -m 0755 "$BIN_DIR/clump" "$ROOTFS/bin/clump"
    install -m 0755 "$BIN_DIR/clump-netd" "$ROOTFS/bin/clump-netd"
    install -m 0755 "$BIN_DIR/clumpd" "$ROOTFS/bin/clumpd"
    install -m 0755 "$BIN_DIR/clump-screend" "$ROOTFS/bin/clump-screend"
    # A workload of our own for the migration tests and benchmarks (memory checked after a move).
    install -m 0755 "$BIN_DIR/clump-work" "$ROOTFS/bin/clump-work"

    install -m 0755 "$BUSYBOX_DIR/bin/busybox" "$ROOTFS/bin/busybox"
    local applet n=0
    while read -r applet; do
        case $applet in init | linuxrc | busybox | clump | "") continue ;; esac
        [[ -e $ROOTFS/bin/$applet ]] && continue
        ln -s busybox "$ROOTFS/bin/$applet"
        n=$((n + 1))
    done < <("$ROOTFS/bin/busybox" --list)
    ((n > 100)) || die "busybox --list gave only $n applets"
    info "busybox ${PKG_VERSION[busybox-static]}: $n applet links in /bin"

    stage_criu

    # The skeleton from image/rootfs: /etc/passwd and /etc/group (root only).
    cp -R --no-preserve=ownership "$ROOT/image/rootfs/." "$ROOTFS/"
    chmod -R u=rwX,go=rX "${ROOTFS:?}/etc"
    printf 'version=%s\nkernel=%s\n' "$CLUMP_VERSION" "$KVER" >"$ROOTFS/etc/clump/release"
    # The cluster key, readable by root only (after the chmod above); cpio keeps the mode.
    (umask 077 && printf '%s\n' "$CLUSTER_KEY" >"$ROOTFS/etc/clump/cluster.key")
    chmod 0600 "$ROOTFS/etc/clump/cluster.key"
}

# Copies criu and the closure of its ELF NEEDED libraries (from the downloaded library packages).
stage_criu() {
    install -m 0755 "$CRIU_DIR/usr/sbin/criu" "$ROOTFS/usr/sbin/criu"

    # soname -> file, and soname -> package, over every library the candidate packages ship
    declare -A lib_file=() lib_pkg=()
    local pkg dir f
    for pkg in "${LIB_PKGS[@]}"; do
        dir=$(extract_deb "$pkg")
        for f in "$dir"/lib/x86_64-linux-gnu/*.so* "$dir"/usr/lib/x86_64-linux-gnu/*.so*; do
            [[ -e $f ]] || continue
            lib_file[$(basename "$f")]=$f
            lib_pkg[$(basename "$f")]=$pkg
        done
    done

    local interp
    interp=$(readelf -l "$ROOTFS/usr/sbin/criu" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
    [[ $interp == /lib64/ld-linux-x86-64.so.2 ]] || die "criu has an unexpected interpreter: '$interp'"

    local queue=() soname need
    declare -A done_set=()
    mapfile -t queue < <(readelf -d "$ROOTFS/usr/sbin/criu" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    queue+=(ld-linux-x86-64.so.2)
    while ((${#queue[@]})); do
        soname=${queue[0]}
        queue=("${queue[@]:1}")
        [[ -n ${done_set[$soname]:-} ]] && continue
        done_set[$soname]=1
        [[ -n ${lib_file[$soname]:-} ]] ||
            die "criu needs $soname, which none of its Debian library packages ships (${LIB_PKGS[*]})"
        cp -L "${lib_file[$soname]}" "$ROOTFS/lib/x86_64-linux-gnu/$soname"
        chmod 0755 "$ROOTFS/lib/x86_64-linux-gnu/$soname"
        PKG_ROLE[${lib_pkg[$soname]}]="criu libraries"
        while read -r need; do
            [[ -n $need ]] && queue+=("$need")
        done < <(readelf -d "$ROOTFS/lib/x86_64-linux-gnu/$soname" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    done
    ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$ROOTFS/lib64/ld-linux-x86-64.so.2"
    info "criu ${PKG_VERSION[criu]}: ${#done_set[@]} libraries: $(printf '%s ' "${!done_set[@]}" | tr ' ' '\n' | sort | tr '\n' ' ')"

    # Smoke test: the staged criu starts with only the staged libraries (needs root for chroot).
    if [[ $EUID -eq 0 ]]; then
        chroot "$ROOTFS" /usr/sbin/criu --version >/dev/null ||
            die "the staged criu does not run inside the rootfs (library closure incomplete?)"
    fi
}

# ------------------------------------------------------------------------------------------------
# Step 4: kernel modules

# Prints the selected module paths (relative to lib/modules/<kver>/) for image/modules.list.
select_modules() {
    local moddir=$1 list=$ROOT/image/modules.list
    local line f name
    local -a includes=() excludes=()
    declare -A by_name=() builtin=()
    while read -r f; do
        name=$(basename "$f" .ko)
        by_name[${name//-/_}]=$f
    done < <(cut -d: -f1 "$moddir/modules.dep")
    while read -r f; do
        name=$(basename "$f" .ko)
        builtin[${name//-/_}]=1
    done <"$moddir/modules.builtin"

    shopt -s globstar
    local n=0
    while IFS= read -r line || [[ -n $line ]]; do
        n=$((n + 1))
        line=${line%%#*}
        line=${line//[[:space:]]/}
        [[ -z $line ]] && continue
        case $line in
        !*) excludes+=("${line#!}") ;;
        */)
            local hits=("$moddir/kernel/$line"**/*.ko)
            ((${#hits[@]})) || warn "modules.list:$n: no modules under $line"
            for f in "${hits[@]}"; do includes+=("${f#"$moddir"/}"); done
            ;;
        */*)
            # shellcheck disable=SC2206 # the glob is meant to expand
            local hits=($moddir/kernel/$line)
            ((${#hits[@]})) || warn "modules.list:$n: nothing matches $line"
            for f in "${hits[@]}"; do includes+=("${f#"$moddir"/}"); done
            ;;
        *)
            name=${line//-/_}
            if [[ -n ${by_name[$name]:-} ]]; then
                includes+=("${by_name[$name]}")
            elif [[ -z ${builtin[$name]:-} ]]; then
                warn "modules.list:$n: module $line is neither a module nor built into $KVER"
            fi
            ;;
        esac
    done <"$list"
    shopt -u globstar

    local x keep
    for f in "${includes[@]}"; do
        keep=1
        for x in "${excludes[@]}"; do
            # shellcheck disable=SC2053 # pattern match on purpose
            if [[ $x == */ && $f == kernel/$x* ]] || [[ $f == kernel/$x ]]; then
                keep=0
                break
            fi
        done
        ((keep)) && echo "$f"
    done | sort -u
}

# Adds the dependency closure (modules.dep + soft dependencies) to the paths on stdin.
module_closure() {
    local moddir=$1 f name dep
    declare -A deps=() by_name=() soft=() have=()
    local key rest
    while IFS=: read -r key rest; do
        deps[$key]=$rest
        name=$(basename "$key" .ko)
        by_name[${name//-/_}]=$key
    done <"$moddir/modules.dep"
    if [[ -f $moddir/modules.softdep ]]; then
        local w mod
        while read -r w mod rest; do
            [[ $w == softdep ]] || continue
            soft[${mod//-/_}]=$(tr ' ' '\n' <<<"$rest" | grep -v -e '^pre:$' -e '^post:$' -e '^$' | tr '\n' ' ')
        done <"$moddir/modules.softdep"
    fi
    local queue=()
    mapfile -t queue
    while ((${#queue[@]})); do
        f=${queue[0]}
        queue=("${queue[@]:1}")
        [[ -n ${have[$f]:-} ]] && continue
        have[$f]=1
        for dep in ${deps[$f]:-}; do queue+=("$dep"); done
        name=$(basename "$f" .ko)
        for dep in ${soft[${name//-/_}]:-}; do
            dep=${dep//-/_}
            [[ -n ${by_name[$dep]:-} ]] && queue+=("${by_name[$dep]}")
        done
    done
    printf '%s\n' "${!have[@]}" | sort
}

stage_modules() {
    local src=$KERNEL_MODROOT/lib/modules/$KVER dst=$ROOTFS/lib/modules/$KVER
    # depmod of the whole tree once (the Debian package ships no modules.dep): gives the full
    # dependency and softdep tables to resolve the selection against.
    if [[ ! -s $src/modules.dep ]]; then
        depmod -b "$KERNEL_MODROOT" "$KVER" || die "depmod on the full $KVER tree failed"
    fi
    local selected
    selected=$(select_modules "$src" | module_closure "$src")
    [[ -n $selected ]] || die "no modules selected"
    mkdir -p "$dst"
    local f
    while read -r f; do
        mkdir -p "$dst/$(dirname "$f")"
        cp "$src/$f" "$dst/$f"
    done <<<"$selected"
    grep -Fx -f <(printf '%s\n' "$selected") "$src/modules.order" >"$dst/modules.order" || true
    cp "$src/modules.builtin" "$src/modules.builtin.modinfo" "$dst/"
    depmod -b "$ROOTFS" "$KVER" || die "depmod on the staged modules failed"
    # Ship the text tables only (our loader reads text; busybox modprobe too).
    rm -f "$dst"/*.bin "$dst/modules.builtin.modinfo" "$dst/modules.symbols"
    MODULE_COUNT=$(wc -l <<<"$selected")
    info "$MODULE_COUNT modules ($(du -sh "$dst" | cut -f1)), $(wc -l <"$dst/modules.alias") aliases"
    local m
    for m in virtio_pci virtio_net e1000 e1000e 8139cp 8139too r8169 bochs button evdev xhci_pci usbhid; do
        grep -q "/${m//_/[_-]}\.ko:" "$dst/modules.dep" || warn "module $m is not in the image"
    done
}

# ------------------------------------------------------------------------------------------------
# Step 5: the initramfs

compress() { # stdin -> stdout
    case $COMPRESSION in
    # The kernel's xz decoder wants CRC32 checks; BCJ (--x86) makes this cpio bigger, not smaller.
    xz) xz --format=xz --check=crc32 --lzma2=preset=9e,dict=32MiB --threads=1 -c ;;
    # Multithreaded zstd output does not depend on the thread count: still reproducible.
    zstd) zstd -q -19 -T0 -c ;;
    *) die "unknown compression $COMPRESSION" ;;
    esac
}

check_initrd_compression() {
    local opt
    case $COMPRESSION in xz) opt=CONFIG_RD_XZ ;; zstd) opt=CONFIG_RD_ZSTD ;; esac
    grep -q "^$opt=y" "$KERNEL_CONFIG" || die "kernel $KVER cannot unpack a $COMPRESSION initramfs ($opt)"
}

# Writes a newc cpio of the given paths (relative to the rootfs, one per line on stdin).
cpio_of() {
    (cd "$ROOTFS" && cpio --quiet -o -H newc -R 0:0 --reproducible)
}

make_initramfs() {
    check_initrd_compression
    # Fixed mtimes, sorted names: the same inputs give the same bytes.
    find "$ROOTFS" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    INITRD=$OUT/initrd.img
    (cd "$ROOTFS" && find . -mindepth 1 | sed 's|^\./||' | sort) >"$OUT/rootfs.list"
    cpio_of <"$OUT/rootfs.list" >"$OUT/initrd.cpio"
    INITRD_RAW=$(filesize "$OUT/initrd.cpio")
    # Same archive and compressor as last time: keep the compressed image (saves ~25 s).
    local key
    key=$( (sha256 "$OUT/initrd.cpio" && declare -f compress) | sha256sum | cut -c1-64)
    if [[ -s $INITRD && $(cat "$OUT/.initrd.key" 2>/dev/null) == "$key" && -s $OUT/.components.json ]]; then
        info "initramfs unchanged since the last build: not compressed again"
    else
        rm -f "$OUT/.initrd.key"
        # Compress the whole image and, in parallel, each component on its own (for the size report).
        component_sizes &
        local pid=$!
        compress <"$OUT/initrd.cpio" >"$INITRD.tmp"
        wait "$pid" || die "measuring the initramfs components failed"
        mv "$INITRD.tmp" "$INITRD"
        echo "$key" >"$OUT/.initrd.key"
    fi
    rm -f "$OUT/initrd.cpio"
    info "initramfs: $(mib "$INITRD_RAW") cpio -> $(mib "$(filesize "$INITRD")") $COMPRESSION"
}

# Per component: bytes in the tree and the size of its own compressed cpio -> out/.components.json.
# The compressed sizes are cached by content (paths, modes, sha256; not mtimes), so only components
# that changed are compressed again.
component_sizes() {
    local entry name pattern files meta sums key raw comp
    local -a parts=(
        "modules|^lib/modules"
        "criu|^usr/sbin/criu\$|^lib/x86_64-linux-gnu|^lib64"
        "busybox|^bin/busybox\$"
        "clump|^init\$|^bin/clump\$|^bin/clump-netd\$|^bin/clumpd\$"
    )
    mkdir -p "$CACHE/sizes"
    local json='{}'
    for entry in "${parts[@]}"; do
        name=${entry%%|*}
        pattern=${entry#*|}
        files=$(grep -E "$pattern" "$OUT/rootfs.list")
        meta=$(cd "$ROOTFS" && xargs -r -d '\n' stat -c '%n|%a|%F|%s|%N' <<<"$files")
        sums=$(awk -F'|' '$3 == "regular file" { print $1 }' <<<"$meta" | (cd "$ROOTFS" && xargs -r -d '\n' sha256sum))
        raw=$(awk -F'|' '$3 == "regular file" { t += $4 } END { print t + 0 }' <<<"$meta")
        key=$(printf '%s\n%s\n%s\n' "$(declare -f compress)" "$meta" "$sums" | sha256sum | cut -c1-64)
        if [[ -s $CACHE/sizes/$key ]]; then
            comp=$(cat "$CACHE/sizes/$key")
        else
            comp=$(cpio_of <<<"$files" | compress | wc -c)
            echo "$comp" >"$CACHE/sizes/$key"
        fi
        json=$(jq --arg n "$name" --argjson raw "$raw" --argjson comp "$comp" \
            '.[$n] = {bytes: $raw, compressed_bytes: $comp}' <<<"$json")
    done
    echo "$json" >"$OUT/.components.json"
}

# ------------------------------------------------------------------------------------------------
# Step 6: the ISO

render() { # template -> stdout, with @CMDLINE@ @VERSION@ @KVER@ replaced
    sed -e "s|@CMDLINE@|$CMDLINE|g" -e "s|@VERSION@|$CLUMP_VERSION|g" -e "s|@KVER@|$KVER|g" "$1"
}

make_iso() {
    local tree=$OUT/iso-tree
    rm -rf "${tree:?}"
    mkdir -p "$tree/boot/grub"
    cp "$KERNEL_IMAGE" "$tree/boot/vmlinuz"
    cp "$INITRD" "$tree/boot/initrd.img"
    render "$ROOT/image/grub.cfg" >"$tree/boot/grub/grub.cfg"
    find "$tree" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    # Slim GRUB: only the modules the config needs, no locales/fonts/themes (saves ~16 MB).
    grub-mkrescue --compress=xz \
        --install-modules="linux normal iso9660 search search_label search_fs_uuid search_fs_file part_msdos part_gpt fat all_video gfxterm echo test configfile" \
        --locales="" --fonts="" --themes="" \
        -o "$OUT/grub-mkrescue.iso" "$tree" -- -volid "$VOLID" >"$OUT/grub-mkrescue.log" 2>&1 ||
        {
            cat "$OUT/grub-mkrescue.log" >&2
            die "grub-mkrescue failed"
        }
    rm -rf "${tree:?}"
    remaster_iso "$OUT/grub-mkrescue.iso" "$OUT/clump.iso.tmp"
    mv "$OUT/clump.iso.tmp" "$OUT/clump.iso"
    rm -f "$OUT/grub-mkrescue.iso"
    info "clump.iso: $(mib "$(filesize "$OUT/clump.iso")")"
}

# grub-mkrescue puts its UEFI GRUB (~0.2 MB) into a fixed 2.88 MB FAT image (El Torito UEFI entry and
# GPT EFI partition) and adds Apple boot files. Re-master its ISO with the same GRUB and boot records
# but a FAT image just large enough: 2.7 MB smaller. The modification date is kept: GRUB's EFI image
# finds the ISO by it (search --fs-uuid).
remaster_iso() {
    local in=$1 out=$2 dir=$OUT/iso-master moddate kb units
    rm -rf "${dir:?}"
    mkdir -p "$dir"
    xorriso -osirrox on -indev "$in" -extract / "$dir/tree" >"$dir/extract.log" 2>&1 ||
        die "cannot extract $in (see $dir/extract.log)"
    chmod -R u+w "$dir/tree"
    moddate=$(xorriso -indev "$in" -report_el_torito as_mkisofs 2>/dev/null |
        sed -n "s/^--modification-date='\([0-9]*\)'\$/\1/p")
    [[ -n $moddate ]] || die "cannot read the modification date of $in"
    mcopy -n -i "$dir/tree/efi.img" ::/efi/boot/bootx64.efi "$dir/bootx64.efi" ||
        die "no /efi/boot/bootx64.efi in grub-mkrescue's efi.img"
    # FAT12 image: the loader rounded up to 32 KiB units, plus 64 KiB for the file system itself.
    units=$((($(filesize "$dir/bootx64.efi") + 32767) / 32768))
    kb=$((units * 32 + 64))
    if ! mformat -i "$dir/efi.img" -C -T $((kb * 2)) -h 2 -s 32 -L 16 :: ||
        ! mmd -i "$dir/efi.img" ::/efi ::/efi/boot ||
        ! mcopy -i "$dir/efi.img" "$dir/bootx64.efi" ::/efi/boot/bootx64.efi; then
        die "cannot build the UEFI boot image with mtools"
    fi
    mv "$dir/efi.img" "$dir/tree/efi.img"
    rm -rf "$dir/tree/System" "$dir/tree/mach_kernel" "$dir/tree/boot.catalog"
    # The options grub-mkrescue gives xorriso (xorriso -report_el_torito as_mkisofs), less HFS+/APM.
    xorriso -as mkisofs -o "$out" -r -V "$VOLID" --modification-date="$moddate" \
        --grub2-mbr /usr/lib/grub/i386-pc/boot_hybrid.img --protective-msdos-label \
        -partition_cyl_align off -partition_offset 0 -partition_hd_cyl 64 -partition_sec_hd 32 \
        -efi-boot-part --efi-boot-image -c /boot.catalog \
        -b /boot/grub/i386-pc/eltorito.img -no-emul-boot -boot-load-size 4 -boot-info-table --grub2-boot-info \
        -eltorito-alt-boot -e /efi.img -no-emul-boot \
        "$dir/tree" >"$dir/xorriso.log" 2>&1 || {
        cat "$dir/xorriso.log" >&2
        die "xorriso failed to re-master the ISO"
    }
    rm -rf "${dir:?}"
}

# ------------------------------------------------------------------------------------------------
# Step 7: the PXE tree

make_pxe() {
    local pxe=$OUT/pxe
    rm -rf "${pxe:?}"
    mkdir -p "$pxe/pxelinux.cfg"
    cp "$KERNEL_IMAGE" "$pxe/vmlinuz"
    cp "$INITRD" "$pxe/initrd.img"
    render "$ROOT/image/boot.ipxe" >"$pxe/boot.ipxe"
    render "$ROOT/image/pxelinux.cfg" >"$pxe/pxelinux.cfg/default"
    render "$ROOT/image/dnsmasq-pxe.conf" >"$pxe/dnsmasq-pxe.conf.example"
    local p s
    p=$(extract_deb pxelinux)
    s=$(extract_deb syslinux-common)
    cp "$p/usr/lib/PXELINUX/pxelinux.0" "$pxe/pxelinux.0"
    cp "$s/usr/lib/syslinux/modules/bios/ldlinux.c32" "$pxe/ldlinux.c32"
    p=$(extract_deb ipxe)
    cp "$p/usr/lib/ipxe/undionly.kpxe" "$p/usr/lib/ipxe/snponly.efi" "$pxe/"
    find "$pxe" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    info "pxe/: $(cd "$pxe" && find . -type f | sort | tr '\n' ' ')"
}

# ------------------------------------------------------------------------------------------------
# Step 8: manifest.json

write_manifest() {
    local pkgs_json artefacts_json comps_json
    pkgs_json=$(
        for p in "${!PKG_ROLE[@]}"; do
            jq -n --arg name "$p" --arg version "${PKG_VERSION[$p]}" --arg role "${PKG_ROLE[$p]}" \
                '{name: $name, version: $version, used_for: $role}'
        done | jq -s 'sort_by(.name)'
    )
    artefacts_json=$(
        cd "$OUT"
        for f in clump.iso pxe/*.* pxe/pxelinux.cfg/default; do
            [[ -f $f ]] || continue
            jq -n --arg path "$f" --argjson size "$(filesize "$f")" --arg sha "$(sha256 "$f")" \
                '{path: $path, size: $size, sha256: $sha}'
        done | jq -s .
    )
    comps_json=$(cat "$OUT/.components.json")
    jq -n \
        --arg version "$CLUMP_VERSION" \
        --arg commit "$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)" \
        --argjson epoch "$SOURCE_DATE_EPOCH" \
        --arg kver "$KVER" --arg kflavour "$KERNEL_FLAVOUR" --arg kpkg "$KERNEL_PKG" \
        --arg kver_pkg "${PKG_VERSION[$KERNEL_PKG]:-custom}" \
        --argjson ksize "$(filesize "$KERNEL_IMAGE")" --arg ksha "$(sha256 "$KERNEL_IMAGE")" \
        --arg cmdline "$CMDLINE" --arg compression "$COMPRESSION" \
        --argjson isize "$(filesize "$INITRD")" --argjson iraw "$INITRD_RAW" \
        --argjson nmod "$MODULE_COUNT" --arg keyfp "$CLUSTER_KEY_FINGERPRINT" \
        --argjson packages "$pkgs_json" --argjson artefacts "$artefacts_json" --argjson comps "$comps_json" \
        '{
          clump_version: $version, git_commit: $commit, source_date_epoch: $epoch,
          kernel: {version: $kver, flavour: $kflavour, package: $kpkg, package_version: $kver_pkg,
                   vmlinuz_bytes: $ksize, vmlinuz_sha256: $ksha, cmdline: $cmdline},
          initramfs: {compression: $compression, bytes: $isize, uncompressed_bytes: $iraw,
                      module_count: $nmod,
                      components: ($comps + {kernel_outside_initramfs: {bytes: $ksize}})},
          cluster_key: {fingerprint: $keyfp},
          packages: $packages,
          artefacts: $artefacts
        }' >"$OUT/manifest.json"
    info "manifest.json: ${#PKG_ROLE[@]} packages, $(jq '.artefacts | length' "$OUT/manifest.json") artefacts"
}

# ------------------------------------------------------------------------------------------------
# Subcommands

clump_version() {
    local v commit
    v=$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml")
    commit=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
    echo "${v:-0.0.0}+g$commit"
}

# Everything up to the compressed initramfs; shared by iso, pxe and all.
prepare_image() {
    ensure_packages "${PKGS_IMAGE[@]}"
    CLUMP_VERSION=$(clump_version)
    mkdir -p "$OUT" "$CACHE"
    resolve_cluster_key
    step "cargo build (static init, clump, clump-netd, clumpd)" build_binaries
    step "kernel ($KERNEL_FLAVOUR)" resolve_kernel
    info "kernel $KVER (${KERNEL_PKG} ${PKG_VERSION[$KERNEL_PKG]:-})"
    step "userland packages" fetch_userland
    step "rootfs" stage_rootfs
    step "modules" stage_modules
    step "initramfs ($COMPRESSION)" make_initramfs
}

# --key FILE (all, iso, pxe, test, demo). The path is made absolute: test and demo run elsewhere.
parse_key_opt() {
    [[ -n ${1:-} ]] || die "--key takes a file holding the cluster key (64 hex digits)"
    [[ -f $1 ]] || die "--key $1: no such file"
    KEY_FILE=$(realpath -- "$1")
}

parse_image_opts() {
    while (($#)); do
        case $1 in
        --kernel)
            [[ ${2:-} == custom || ${2:-} == debian ]] || die "--kernel takes 'custom' or 'debian'"
            KERNEL_FLAVOUR=$2
            shift 2
            ;;
        --key)
            parse_key_opt "${2:-}"
            shift 2
            ;;
        *) die "unknown option: $1" ;;
        esac
    done
}

# Only --key (test, demo).
parse_key_only() {
    while (($#)); do
        case $1 in
        --key)
            parse_key_opt "${2:-}"
            shift 2
            ;;
        *) die "unknown option: $1" ;;
        esac
    done
}

cmd_all() {
    parse_image_opts "$@"
    local t0
    t0=$(now)
    prepare_image
    step "iso" make_iso
    step "pxe" make_pxe
    step "manifest" write_manifest
    log "built in $(elapsed "$t0"): out/clump.iso ($(mib "$(filesize "$OUT/clump.iso")")), out/pxe/, out/manifest.json"
}

cmd_iso() {
    parse_image_opts "$@"
    prepare_image
    step "iso" make_iso
    step "manifest" write_manifest
}

cmd_pxe() {
    parse_image_opts "$@"
    prepare_image
    step "pxe" make_pxe
    step "manifest" write_manifest
}

cmd_check_kernel() {
    local config=${1:-}
    ensure_cargo
    if [[ -z $config ]]; then
        resolve_kernel
        config=$KERNEL_CONFIG
    fi
    [[ -f $config ]] || die "no such kernel config: $config"
    (cd "$ROOT" && cargo run -q --locked -p clump-kconfig -- "$config" "$ROOT/kernel-config/clump.config")
}

cmd_clean() {
    case ${1:-} in
    "") ;;
    --all)
        log "removing the download cache $CACHE"
        rm -rf "${CACHE:?}"
        ;;
    *) die "clean takes no option but --all" ;;
    esac
    log "removing $OUT"
    rm -rf "${OUT:?}"
}

unpack_source() { # tarball dir
    rm -rf "${2:?}"
    mkdir -p "$2"
    tar -C "$2" -xf "$1" || die "cannot unpack $1"
    touch "$2/.unpacked"
}

# ./build.sh kernel [--config-only]: custom kernel from linux-source with the Clump fragment merged.
cmd_kernel() {
    local config_only=0
    case ${1:-} in
    "") ;;
    --config-only) config_only=1 ;;
    *) die "kernel takes no option but --config-only" ;;
    esac
    ensure_packages "${PKGS_IMAGE[@]}" "${PKGS_KERNEL[@]}"
    ensure_cargo
    resolve_kernel # the Debian kernel: its config is the starting point
    local debian_config=$KERNEL_CONFIG
    local src_pkg
    src_pkg=$(apt-cache show linux-source 2>/dev/null | sed -n 's/^Depends: //p' | head -1 |
        tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep -m1 '^linux-source-') || src_pkg=linux-source-6.1
    fetch_debs "kernel source" "$src_pkg"
    local x ver=${PKG_VERSION[$src_pkg]}
    x=$(extract_deb "$src_pkg")
    local tarball=("$x"/usr/src/linux-source-*.tar.xz)
    ((${#tarball[@]})) || die "no source tarball in $src_pkg"
    local work=$CACHE/kernel/src-$ver
    local tree
    tree=$work/$(basename "${tarball[0]}" .tar.xz)
    [[ -e $work/.unpacked ]] || step "unpack ${tarball[0]##*/}" unpack_source "${tarball[0]}" "$work"
    log "config: Debian's $KVER config + kernel-config/clump.config + kernel-config/local-build.config"
    cp "$debian_config" "$tree/.config"
    (cd "$tree" && ./scripts/kconfig/merge_config.sh -m .config "$ROOT/kernel-config/clump.config" \
        "$ROOT/kernel-config/local-build.config" >"$work/merge.log" 2>&1) ||
        {
            cat "$work/merge.log" >&2
            die "merge_config.sh failed"
        }
    make -C "$tree" -s olddefconfig >/dev/null || die "make olddefconfig failed"
    log "check-kernel on the merged config"
    (cd "$ROOT" && cargo run -q --locked -p clump-kconfig -- "$tree/.config" "$ROOT/kernel-config/clump.config") ||
        die "the merged config does not meet kernel-config/clump.config (see above)"
    if ((config_only)); then
        log "config only: merged config is $tree/.config"
        return 0
    fi
    local t0 kver dest=$CACHE/kernel/custom
    t0=$(now)
    log "make bzImage modules -j$(nproc) (hours on 2 cores)"
    make -C "$tree" -j"$(nproc)" bzImage modules || die "kernel build failed"
    kver=$(make -C "$tree" -s kernelrelease)
    rm -rf "${dest:?}"
    mkdir -p "$dest/root"
    make -C "$tree" -s INSTALL_MOD_PATH="$dest/root" INSTALL_MOD_STRIP=1 modules_install ||
        die "modules_install failed"
    rm -f "$dest/root/lib/modules/$kver/build" "$dest/root/lib/modules/$kver/source"
    cp "$tree/arch/x86/boot/bzImage" "$dest/vmlinuz"
    cp "$tree/.config" "$dest/config"
    echo "$kver" >"$dest/kver"
    echo "$ver" >"$dest/source-version"
    touch "$dest/.built"
    log "custom kernel $kver built in $(elapsed "$t0"); use: ./build.sh iso --kernel custom"
}

# Runs one step of ./build.sh test (an external command, so that `set -e` holds inside it).
test_step() {
    local name=$1 t0
    shift
    t0=$(now)
    log "test: $name"
    "$@" || die "./build.sh test: step '$name' FAILED (exit status $?, after $(elapsed "$t0"))"
    info "test: $name passed in $(elapsed "$t0")"
}

cmd_test() {
    parse_key_only "$@"
    need_root "./build.sh test (the e2e tests use network namespaces)"
    ensure_packages "${PKGS_IMAGE[@]}" "${PKGS_TEST[@]}"
    ensure_cargo
    local t0
    t0=$(now)
    cd "$ROOT"
    test_step "cargo fmt --check" cargo fmt --all -- --check
    test_step "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
    test_step "unit tests" cargo test --workspace --locked --exclude clump-e2e
    test_step "fuzz (12 s per target)" "$ROOT/build.sh" fuzz --seconds 12
    test_step "check-kernel (stock Debian kernel)" "$ROOT/build.sh" check-kernel
    local key_args=()
    [[ -n $KEY_FILE ]] && key_args=(--key "$KEY_FILE")
    test_step "build iso + pxe" "$ROOT/build.sh" all "${key_args[@]}"
    test_step "e2e tests" env CLUMP_OUT="$OUT" cargo test -p clump-e2e --locked -- --test-threads=1
    log "./build.sh test: all steps passed in $(elapsed "$t0")"
}

# ./build.sh fuzz: fuzz/run.sh does the work; libFuzzer's C++ part needs a compiler.
cmd_fuzz() {
    command -v c++ >/dev/null || ensure_packages g++
    ensure_cargo
    "$ROOT/fuzz/run.sh" "$@" || die "fuzz: failed (see above)"
}

cmd_demo() {
    parse_key_only "$@"
    ensure_packages "${PKGS_IMAGE[@]}" "${PKGS_TEST[@]}"
    local key_args=()
    [[ -n $KEY_FILE ]] && key_args=(--key "$KEY_FILE")
    cmd_all "${key_args[@]}"
    ensure_cargo
    (cd "$ROOT" && cargo run --release --locked -p clump-lab -- demo --out "$OUT/demo") || die "demo failed"
}

main() {
    local cmd=${1:-all}
    (($#)) && shift
    case $cmd in
    all) cmd_all "$@" ;;
    iso) cmd_iso "$@" ;;
    pxe) cmd_pxe "$@" ;;
    check-kernel) cmd_check_kernel "$@" ;;
    kernel) cmd_kernel "$@" ;;
    clean) cmd_clean "$@" ;;
    test) cmd_test "$@" ;;
    fuzz) cmd_fuzz "$@" ;;
    demo) cmd_demo "$@" ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        die "unknown subcommand: $cmd"
        ;;
    esac
}

ARGS=("$@")
main "$@"

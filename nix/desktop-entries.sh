# desktop-entries.sh VM OUT PACKAGE...
#
# The .desktop files of a VM's guestPrograms as host launchers, in
# OUT/share/applications: Exec= runs the program in the VM through vm-run
# (waiting for the guest's Wayland display when the VM has just started),
# Name= says which VM it is in, and what would make a launcher look for the
# program on the host (TryExec=, D-Bus activation) is dropped. The
# packages' icons are linked into OUT/share/icons.
set -eu
vm=$1
out=$2
shift 2
apps=$out/share/applications
mkdir -p "$apps"
for pkg in "$@"; do
    for f in "$pkg"/share/applications/*.desktop; do
        [ -e "$f" ] || continue
        sed -e "s|^Exec=|Exec=vm-run --wait-wayland $vm |" \
            -e "s|^\(Name\(\[[^]]*\]\)\{0,1\}\)=|\1=[$vm] |" \
            -e '/^TryExec=/d' -e '/^DBusActivatable=/d' \
            "$f" > "$apps/qubes-lite-$vm-${f##*/}"
    done
    for theme in "$pkg"/share/icons/*; do
        [ -e "$theme" ] || continue
        mkdir -p "$out/share/icons"
        cp -rsf --no-preserve=mode "$theme" "$out/share/icons/"
    done
done

# bash completion for the qubes-lite host commands: their options, VM names
# from the configuration directory, then (for vm-run, and vm-shell --ssh)
# ordinary command completion.
#
# Install as /usr/share/bash-completion/completions/vm-run and link the
# other names (vm-start, vm-stop, vm-start-debug, vm-shell, vm-list) to it,
# or source it.

_qubes_lite_vms() {
    local dir=${QUBES_LITE_CONFIG_DIR:-/etc/qubes-lite}
    local f names=()
    for f in "$dir"/vms/*.json; do
        [[ -e $f ]] || continue
        f=${f##*/}
        names+=("${f%.json}")
    done
    printf '%s\n' "${names[@]}"
}

# The index of the first word that is not an option nor an option's
# argument (the VM), or 0. The arguments name the options that take one.
_qubes_lite_vm_at() {
    local i opt
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            --) echo $((i + 1)); return ;;
            -*)
                for opt; do
                    if [[ ${COMP_WORDS[i]} == "$opt" ]]; then
                        ((i++))
                        break
                    fi
                done
                ;;
            *) echo "$i"; return ;;
        esac
    done
    echo 0
}

# The word being completed, before VM: an option from the list given, or
# a VM name.
_qubes_lite_option_or_vm() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$1" -- "$cur")
    else
        mapfile -t COMPREPLY < <(compgen -W "$(_qubes_lite_vms)" -- "$cur")
    fi
}

# After the VM at index $1: the command and its arguments, completed as
# commands and files.
_qubes_lite_command() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    if ((COMP_CWORD == $1 + 1)); then
        mapfile -t COMPREPLY < <(compgen -c -- "$cur")
    else
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
}

_vm_run() {
    local vm_at
    COMPREPLY=()
    vm_at=$(_qubes_lite_vm_at -u -e -w --user --env --workdir)
    if ((vm_at == 0 || vm_at == COMP_CWORD)); then
        # An option's argument: a user, KEY=VALUE, a directory in the VM.
        case ${COMP_WORDS[COMP_CWORD - 1]} in
            -u|--user|-e|--env|-w|--workdir) return ;;
        esac
        _qubes_lite_option_or_vm "-t -u -e -w --tty --user --env --workdir --wait-wayland --raw-output --no-escape --timing --help"
        return
    fi
    _qubes_lite_command "$vm_at"
}

# vm-start, vm-stop [--timeout SECS], vm-start-debug: options, then one
# VM name (vm-start-debug's options after it are the host agent's).
_vm_name_only() {
    local vm_at opts="--help" argopts=()
    COMPREPLY=()
    if [[ ${COMP_WORDS[0]##*/} == vm-stop ]]; then
        opts="--timeout --help"
        argopts=(--timeout)
    fi
    vm_at=$(_qubes_lite_vm_at "${argopts[@]}")
    ((vm_at == 0 || vm_at == COMP_CWORD)) || return
    # --timeout's argument: seconds, nothing to offer.
    [[ ${COMP_WORDS[COMP_CWORD - 1]} == --timeout && ${#argopts[@]} -gt 0 ]] && return
    _qubes_lite_option_or_vm "$opts"
}

# vm-shell [--ssh [--root | --user USER]] VM [COMMAND...]: with --ssh, a command after VM.
_vm_shell() {
    local i vm_at ssh=0
    COMPREPLY=()
    vm_at=$(_qubes_lite_vm_at -u --user)
    for ((i = 1; i < COMP_CWORD && (vm_at == 0 || i < vm_at); i++)); do
        [[ ${COMP_WORDS[i]} == --ssh ]] && ssh=1
    done
    if ((vm_at == 0 || vm_at == COMP_CWORD)); then
        # --user's argument: a user in the VM, nothing to offer.
        case ${COMP_WORDS[COMP_CWORD - 1]} in
            -u|--user) return ;;
        esac
        _qubes_lite_option_or_vm "--ssh --root -u --user --help"
        return
    fi
    ((ssh)) || return
    _qubes_lite_command "$vm_at"
}

# vm-list: options only.
_vm_list() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    COMPREPLY=()
    [[ $cur == -* ]] && mapfile -t COMPREPLY < <(compgen -W "--json --help" -- "$cur")
}

complete -F _vm_run vm-run
complete -F _vm_name_only vm-start vm-stop vm-start-debug
complete -F _vm_shell vm-shell
complete -F _vm_list vm-list

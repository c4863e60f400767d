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

_vm_run() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    local i word vm_at=0
    # Find where the VM name is: the first word that is not an option or
    # an option's argument.
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        case $word in
            -u|-e|-w|--user|--env|--workdir) ((i++)) ;;
            --) vm_at=$((i + 1)); break ;;
            -*) ;;
            *) vm_at=$i; break ;;
        esac
    done
    if ((vm_at == 0 || vm_at == COMP_CWORD)); then
        case ${COMP_WORDS[COMP_CWORD - 1]} in
            -u|--user|-e|--env) return ;;
            -w|--workdir) return ;;
        esac
        if [[ $cur == -* ]]; then
            mapfile -t COMPREPLY < <(compgen -W "-t -u -e -w --tty --user --env --workdir --timing --help" -- "$cur")
        else
            mapfile -t COMPREPLY < <(compgen -W "$(_qubes_lite_vms)" -- "$cur")
        fi
        return
    fi
    # After the VM: the command and its arguments, completed as commands.
    if ((COMP_CWORD == vm_at + 1)); then
        mapfile -t COMPREPLY < <(compgen -c -- "$cur")
    else
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
}

# The index of the first word that is not an option (the VM), or 0.
_qubes_lite_vm_at() {
    local i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            --) echo $((i + 1)); return ;;
            -*) ;;
            *) echo "$i"; return ;;
        esac
    done
    echo 0
}

# vm-start, vm-stop, vm-start-debug: options, then one VM name.
_vm_name_only() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    local vm_at
    COMPREPLY=()
    vm_at=$(_qubes_lite_vm_at)
    ((vm_at == 0 || vm_at == COMP_CWORD)) || return
    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "--help" -- "$cur")
    else
        mapfile -t COMPREPLY < <(compgen -W "$(_qubes_lite_vms)" -- "$cur")
    fi
}

# vm-shell [--ssh [--root]] VM [COMMAND...]: with --ssh, a command after VM.
_vm_shell() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    local i vm_at ssh=0
    COMPREPLY=()
    vm_at=$(_qubes_lite_vm_at)
    for ((i = 1; i < COMP_CWORD && (vm_at == 0 || i < vm_at); i++)); do
        [[ ${COMP_WORDS[i]} == --ssh ]] && ssh=1
    done
    if ((vm_at == 0 || vm_at == COMP_CWORD)); then
        if [[ $cur == -* ]]; then
            mapfile -t COMPREPLY < <(compgen -W "--ssh --root --help" -- "$cur")
        else
            mapfile -t COMPREPLY < <(compgen -W "$(_qubes_lite_vms)" -- "$cur")
        fi
        return
    fi
    ((ssh)) || return
    if ((COMP_CWORD == vm_at + 1)); then
        mapfile -t COMPREPLY < <(compgen -c -- "$cur")
    else
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
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

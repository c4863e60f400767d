# What the host module, the guest module and the flake's checks share:
# the configuration's rules and derived values, written to agree with the
# C loader (host/common/config.c), so that the module's assertions say what
# `qubes-lite-host-agent --check` says and the guest finds the MACs and
# addresses the host gives it.
{ lib }:
let
  inherit (builtins) match elemAt length genList stringLength substring bitXor;

  # Printable ASCII, for the few characters a name can hold: Nix has no
  # ord(), and lib.strings.charToInt is younger than some nixpkgs.
  ascii = lib.listToAttrs (lib.imap0 (i: c: lib.nameValuePair c (i + 32)) (lib.stringToCharacters
    " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"));
  ord = c: ascii.${c} or (throw "qubes-lite: '${c}' is not printable ASCII");

  hexDigits = lib.stringToCharacters "0123456789abcdef";
  hexValue = lib.listToAttrs (lib.imap0 (i: c: lib.nameValuePair c i) hexDigits);
  fromHex = s: lib.foldl' (acc: c: acc * 16 + hexValue.${c}) 0 (lib.stringToCharacters (lib.toLower s));
  hex2 = n: elemAt hexDigits (n / 16) + elemAt hexDigits (lib.mod n 16);

  # 64-bit FNV-1a in four 16-bit limbs (least significant first): Nix
  # integers are signed and newer Nix refuses to overflow them.
  fnvOffset = [ 8997 33826 40164 52210 ]; # 0xcbf29ce484222325
  fnvStep = h: byte:
    let
      h0 = bitXor (elemAt h 0) byte;
      h1 = elemAt h 1;
      h2 = elemAt h 2;
      h3 = elemAt h 3;
      # times 0x100000001b3: limbs [0x01b3 0 0x0100 0]
      r0 = h0 * 435;
      r1 = h1 * 435 + r0 / 65536;
      r2 = h2 * 435 + h0 * 256 + r1 / 65536;
      r3 = h3 * 435 + h1 * 256 + r2 / 65536;
    in
    [ (lib.mod r0 65536) (lib.mod r1 65536) (lib.mod r2 65536) (lib.mod r3 65536) ];
  fnv1a64 = s: lib.foldl' fnvStep fnvOffset (map ord (lib.stringToCharacters s));

  pow2 = n: lib.foldl' (acc: _: acc * 2) 1 (genList (x: x) n);
  # An integer below 2^32 as a.b.c.d.
  ipv4 = a: lib.concatMapStringsSep "." (i: toString (lib.mod (a / pow2 (8 * (3 - i))) 256))
    (genList (x: x) 4);

  render = v: if builtins.isBool v then lib.boolToString v else toString v;
  hasControl = s: match "[^[:cntrl:]]*" s == null;
in
rec {
  vmNameMax = 12;
  netNameMax = 32;

  # [a-z][a-z0-9-], at most 12: the TAP is vm-<name>, 15 characters at most.
  vmNameValid = s: match "[a-z][a-z0-9-]{0,11}" s != null;
  netNameValid = s: match "[a-z][a-z0-9-]{0,31}" s != null;
  userNameValid = s: match "[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}" s != null;
  # Printable ASCII but '/' and ':', 1 to 15 characters, not . or ..
  ifnameValid = s: match "[!-.0-9;-~]{1,15}" s != null && s != "." && s != "..";
  # crosvm's key=value keys.
  optionKeyValid = s: match "[A-Za-z0-9_-]+" s != null;
  absolutePath = s: builtins.isString s && match "/.*" s != null && !hasControl s;
  inherit hasControl render;

  # hostNetworking.network's prefix, as host/common/config.h bounds it.
  networkPrefixMin = 1;
  networkPrefixMax = 30;

  # "172.16.200.0/24" -> { addr = <the address as an integer>; prefix = 24; };
  # null unless an IPv4 network written as the C side reads it (no leading
  # zeros, prefix networkPrefixMin to networkPrefixMax, host part 0).
  parseNetwork = s:
    let octet = "(0|[1-9][0-9]{0,2})";
        m = match "${octet}\\.${octet}\\.${octet}\\.${octet}/(0|[1-9][0-9]?)" s;
        n = if m == null then [ ] else map lib.toInt m;
        octets = lib.take 4 n;
        prefix = elemAt n 4;
        addr = lib.foldl' (acc: o: acc * 256 + o) 0 octets;
        size = pow2 (32 - prefix);
    in
    if m == null || lib.any (o: o > 255) octets || prefix < networkPrefixMin
      || prefix > networkPrefixMax || lib.mod addr size != 0 then null
    else { inherit addr prefix; };

  # The highest id whose /31 is in the network (parseNetwork's): its last
  # address.
  networkIdMax = net: pow2 (32 - net.prefix) - 1;

  # The VM's address and its gateway, the host end of its /31: the
  # network's address plus the id, and minus one.
  vmAddress = net: id: ipv4 (net.addr + id);
  hostAddress = net: id: ipv4 (net.addr + id - 1);

  # "01:00.0" or "0000:01:00.0" -> "0000:01:00.0" (lower case); null when
  # neither.
  pciCanonical = s:
    let m = match "(([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\\.([0-9a-fA-F])" s;
        domain = if m == null || elemAt m 1 == null then "0000" else lib.toLower (elemAt m 1);
    in
    if m == null || fromHex (elemAt m 3) > 31 || fromHex (elemAt m 4) > 7 then null
    else "${domain}:${lib.toLower (elemAt m 2)}:${lib.toLower (elemAt m 3)}.${elemAt m 4}";

  # A VM's own MAC, the rule of proto/rules.c: six hex pairs, unicast,
  # not all zero.
  macValid = s:
    match "([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}" s != null
    && lib.mod (fromHex (substring 0 2 s)) 2 == 0
    && match "(00:){5}00" s == null;

  # 52: and the low 40 bits of FNV-1a-64("<net>/<vm>"), most significant
  # byte first: the C side's derivation, so the switch, crosvm and the
  # guest agree on a MAC nobody wrote down.
  macDerive = net: vm:
    let
      h = fnv1a64 "${net}/${vm}";
      byte = limb: high: if high then elemAt h limb / 256 else lib.mod (elemAt h limb) 256;
    in
    lib.concatStringsSep ":" ([ "52" ] ++ map hex2 [
      (byte 2 false) (byte 1 true) (byte 1 false) (byte 0 true) (byte 0 false)
    ]);
  macOf = net: vm: given: if given != null then lib.toLower given else macDerive net vm;

  # Problems of one free-form set of crosvm options ({ key = value; }), in
  # --check's words: `key` names the set ("additionalDisks[0]"), `sep` is
  # the character that would split the option.
  optionProblems = key: sep: set: lib.concatLists (lib.mapAttrsToList
    (k: v:
      let
        kk = "${key}.${k}";
        s = render v;
      in
      if v == null then [ ]
      else if !optionKeyValid k then [ "key '${kk}': not a valid option name ([A-Za-z0-9_-])" ]
      else if hasControl s then [ "key '${kk}': holds a control character" ]
      else if lib.hasInfix sep s then [ "key '${kk}': '${s}' holds '${sep}', which would split the option" ]
      else [ ])
    set);
}

# Render an attribute set as TOML, with builtins only: the NixOS module uses
# it for larder-server's config file, and the tests evaluate it with
# `nix-instantiate --eval --strict` where no nixpkgs exists.
#
# Values: strings, paths (rendered as strings), integers, floats, booleans,
# lists of those, nested attribute sets (rendered as [tables]) and lists of
# attribute sets (rendered as [[arrays of tables]]). `null`
# values are left out, so a setting can be unset by overriding it with null.
# Paths render as they are written (never copied to the store); derivations
# (packages) as their store path.
let
  inherit (builtins)
    attrNames concatStringsSep filter isAttrs isBool isFloat isInt isList
    isPath isString match throw toJSON toString typeOf;

  isTable = v: isAttrs v && !(v ? outPath);
  isTableList = v: isList v && v != [ ] && builtins.all isTable v;
  isSection = v: isTable v || isTableList v;

  # TOML basic strings accept every escape `toJSON` produces (\" \\ \n \t
  # \uXXXX ...), so JSON string syntax is TOML string syntax.
  string = s: toJSON s;

  key = k: if match "[A-Za-z0-9_-]+" k != null then k else string k;

  value = path: v:
    if isBool v then (if v then "true" else "false")
    else if isInt v || isFloat v then toJSON v
    else if isString v then string v
    else if isPath v then string (toString v)
    else if isAttrs v && v ? outPath then string "${v}"
    else if isList v then "[" + concatStringsSep ", " (map (value path) v) + "]"
    else throw "larder settings: ${path} is a ${typeOf v}; use a string, number, boolean, list or attribute set";

  present = attrs: filter (k: attrs.${k} != null) (attrNames attrs);

  # `prefix` is the dotted table name ("" at the top level), `header` the
  # line that opens it ("" at the top level, "[a.b]" or "[[a.b]]"). A table
  # holding only sub-tables needs no header of its own, but an element of an
  # array of tables always does.
  table = header': prefix: attrs:
    let
      names = present attrs;
      header =
        if header' == "" || (scalars == [ ] && builtins.substring 0 2 header' != "[[") then ""
        else "${header'}\n";
      scalars = filter (k: !isSection attrs.${k}) names;
      sections = filter (k: isSection attrs.${k}) names;
      dotted = k: if prefix == "" then key k else "${prefix}.${key k}";
      lines = map (k: "${key k} = ${value (dotted k) attrs.${k}}\n") scalars;
      section = k:
        let v = attrs.${k}; in
        if isTable v then table "[${dotted k}]" (dotted k) v
        else concatStringsSep "" (map (table "[[${dotted k}]]" (dotted k)) v);
    in
    header + concatStringsSep "" lines + concatStringsSep "" (map section sections);
in
settings:
if isTable settings then table "" "" settings
else throw "larder settings: expected an attribute set, got a ${typeOf settings}"

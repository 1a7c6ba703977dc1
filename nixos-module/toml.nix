# Render an attribute set as TOML, with builtins only: the NixOS module uses
# it for larder-server's config file, and the tests evaluate it with
# `nix-instantiate --eval --strict` where no nixpkgs exists.
#
# Values: strings, paths (rendered as strings), integers, floats, booleans,
# lists of those, and nested attribute sets (rendered as [tables]). `null`
# values are left out, so a setting can be unset by overriding it with null.
# Paths render as they are written (never copied to the store); derivations
# (packages) as their store path.
let
  inherit (builtins)
    attrNames concatStringsSep filter isAttrs isBool isFloat isInt isList
    isPath isString match throw toJSON toString typeOf;

  isTable = v: isAttrs v && !(v ? outPath);

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

  # `prefix` is the dotted table name ("" at the top level).
  table = prefix: attrs:
    let
      names = present attrs;
      scalars = filter (k: !isTable attrs.${k}) names;
      tables = filter (k: isTable attrs.${k}) names;
      dotted = k: if prefix == "" then key k else "${prefix}.${key k}";
      header = if prefix == "" || scalars == [] then "" else "[${prefix}]\n";
      lines = map (k: "${key k} = ${value (dotted k) attrs.${k}}\n") scalars;
    in
    header + concatStringsSep "" lines
    + concatStringsSep "" (map (k: table (dotted k) attrs.${k}) tables);
in
settings:
if isTable settings then table "" settings
else throw "larder settings: expected an attribute set, got a ${typeOf settings}"

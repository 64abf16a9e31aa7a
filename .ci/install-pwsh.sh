#!/usr/bin/env bash
# Installs PowerShell 7 (the "PowerShell" .NET tool) and Pester 5 from the configured NuGet
# sources, for the module's Pester suite. Idempotent: when the wanted versions are already there it
# touches no network and returns at once.
#
# Usage: .ci/install-pwsh.sh [TOOLS_DIR]        (default: $HOME/.cache/ssmconnect/tools)
#   TOOLS_DIR/pwsh/pwsh                 the pwsh command (dotnet tool --tool-path)
#   TOOLS_DIR/modules/Pester/<version>  Pester; put TOOLS_DIR/modules on PSModulePath
# Environment:
#   PWSH_VERSION    exact PowerShell tool version; empty (default): newest stable the sources hold
#                   (7.6.x targets net10.0, 7.5.x net9.0, 7.4.x net8.0)
#   PESTER_VERSION  exact version or NuGet floating range (default: 5.*, the newest 5.x)
#   NUGET_EXTRA_SOURCE  one more NuGet source (URL or folder) besides the configured ones
# Output: progress on stderr; the absolute path of pwsh alone on the last line of stdout.
# Exit: 0 ready; 3 a package is not held by any NuGet source; anything else another failure.
set -euo pipefail
exec </dev/null

tools="${1:-$HOME/.cache/ssmconnect/tools}"
pwsh_version="${PWSH_VERSION:-}"
pester_version="${PESTER_VERSION:-5.*}"
extra_source="${NUGET_EXTRA_SOURCE:-}"

log() { echo "install-pwsh: $*" >&2; }
die() {
  local rc="$1"
  shift
  log "error: $*"
  exit "$rc"
}

mkdir -p "$tools"
tools="$(cd "$tools" && pwd -P)"
tool_dir="$tools/pwsh"
pwsh="$tool_dir/pwsh"
modules="$tools/modules"

# Two CI steps may run this at once; the second waits and then finds everything installed.
if command -v flock >/dev/null; then
  exec 9>"$tools/.install.lock"
  flock 9
fi

tmp=""
cleanup() { [ -z "$tmp" ] || rm -rf "$tmp"; }
trap cleanup EXIT
scratch() {
  [ -n "$tmp" ] || tmp="$(mktemp -d "${TMPDIR:-/tmp}/install-pwsh.XXXXXX")"
}

# The PowerShell tool version installed under $tool_dir and seen to run, or nothing. The marker is
# written only after pwsh answered, so an interrupted install is redone.
installed_pwsh_version() {
  [ -x "$pwsh" ] && [ -f "$tool_dir/.verified" ] || return 0
  local v
  v="$(cat "$tool_dir/.verified")"
  [ -d "$tool_dir/.store/powershell/$v" ] && echo "$v"
  return 0
}

pwsh_probe() {
  # shellcheck disable=SC2016 # the expression is PowerShell's, not bash's
  "$pwsh" -NoLogo -NoProfile -NonInteractive -Command '$PSVersionTable.PSVersion.ToString()' 2>&1
}

# The tool's runtimeconfig says which .NET major it needs. When only a newer runtime is installed,
# record rollForward=Major there rather than exporting DOTNET_ROLL_FORWARD, which would leak into
# every process pwsh starts (dotnet build, the tests' child pwsh).
roll_forward_if_needed() {
  local out
  if out="$(pwsh_probe)"; then
    log "pwsh runs: $out"
    return 0
  fi
  case "$out" in
    *"You must install or update .NET"* | *"framework"*"was not found"*) ;;
    *) die 1 "pwsh does not start: $out" ;;
  esac
  local cfg
  cfg="$(find "$tool_dir/.store/powershell" -name 'pwsh.runtimeconfig.json' -print -quit)"
  [ -n "$cfg" ] || die 1 "pwsh needs a .NET runtime that is not installed, and its runtimeconfig was not found: $out"
  log "pwsh needs a .NET runtime that is not installed; setting rollForward=Major in $cfg"
  if grep -q '"rollForward"' "$cfg"; then
    sed -i 's/"rollForward": *"[^"]*"/"rollForward": "Major"/' "$cfg"
  else
    sed -i 's/"runtimeOptions": *{/"runtimeOptions": {\n    "rollForward": "Major",/' "$cfg"
  fi
  out="$(pwsh_probe)" || die 1 "pwsh does not start even with rollForward=Major: $out"
  log "pwsh runs (rolled forward to the newest installed .NET): $out"
}

install_pwsh() {
  local have
  have="$(installed_pwsh_version)"
  if [ -n "$have" ] && { [ -z "$pwsh_version" ] || [ "$have" = "$pwsh_version" ]; }; then
    log "pwsh present: PowerShell $have"
    return 0
  fi
  # A --tool-path install is only the shim and .store, so a clean slate is a plain rm.
  if [ -e "$tool_dir" ]; then
    log "removing ${have:+PowerShell $have from }$tool_dir"
    rm -rf "$tool_dir"
  fi

  local args=(tool install --tool-path "$tool_dir" PowerShell)
  [ -z "$pwsh_version" ] || args+=(--version "$pwsh_version")
  [ -z "$extra_source" ] || args+=(--add-source "$extra_source")
  log "dotnet ${args[*]}"
  local out
  if ! out="$(dotnet "${args[@]}" 2>&1)"; then
    echo "$out" >&2
    case "$out" in
      *"is not found in NuGet feeds"* | *"Unable to find package"* | *NU1101* | *NU1102*)
        die 3 "the NuGet sources hold no PowerShell tool${pwsh_version:+ $pwsh_version} (see 'dotnet nuget list source')" ;;
    esac
    die 1 "dotnet tool install failed"
  fi
  echo "$out" >&2
  roll_forward_if_needed
  find "$tool_dir/.store/powershell" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | head -n1 >"$tool_dir/.verified"
}

# Pester ships as a NuGet package whose root is the module folder. A throwaway project restores it
# with the machine's NuGet configuration (sources, credentials, floating versions), into a package
# folder of our own so the global cache is neither read stale nor filled.
install_pester() {
  local d
  for d in "$modules"/Pester/$pester_version; do
    if [ -f "$d/Pester.psd1" ]; then
      log "Pester present: $d"
      return 0
    fi
  done

  scratch
  local proj="$tmp/pester-restore"
  mkdir -p "$proj"
  cat >"$proj/PesterRestore.csproj" <<EOF
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <TargetFramework>net$(dotnet --version | cut -d. -f1).0</TargetFramework>
    <RestorePackagesPath>$tools/.nuget/packages</RestorePackagesPath>
  </PropertyGroup>
  <ItemGroup>
    <PackageReference Include="Pester" Version="$pester_version" />
  </ItemGroup>
</Project>
EOF
  local args=(restore "$proj/PesterRestore.csproj" -nologo -v:q)
  [ -z "$extra_source" ] || args+=("-p:RestoreAdditionalProjectSources=$extra_source")
  log "restoring Pester $pester_version"
  local out
  if ! out="$(dotnet "${args[@]}" 2>&1)"; then
    echo "$out" >&2
    case "$out" in
      *NU1101* | *NU1102* | *NU1103*) die 3 "the NuGet sources hold no Pester $pester_version" ;;
    esac
    die 1 "restoring Pester failed"
  fi

  local ver
  ver="$(grep -o '"Pester/[^"]*"' "$proj/obj/project.assets.json" | head -n1 | tr -d '"' | cut -d/ -f2)"
  [ -n "$ver" ] || die 1 "restore succeeded but resolved no Pester version"
  local src="$tools/.nuget/packages/pester/$ver"
  [ -f "$src/Pester.psd1" ] || die 1 "Pester $ver package has no Pester.psd1 at its root ($src)"

  # Stage beside the target and rename, so an interrupted copy never looks installed.
  mkdir -p "$modules/Pester"
  local stage="$modules/Pester/.$ver.partial"
  rm -rf "$stage"
  mkdir "$stage"
  (cd "$src" && tar -cf - --exclude='*.nupkg' --exclude='*.sha512' --exclude='.nupkg.metadata' \
    --exclude='*.nuspec' --exclude='.signature.p7s' .) | tar -xf - -C "$stage"
  rm -rf "${modules:?}/Pester/$ver"
  mv "$stage" "$modules/Pester/$ver"
  log "Pester $ver installed: $modules/Pester/$ver"
}

command -v dotnet >/dev/null || die 1 "dotnet is not on PATH"
install_pwsh
install_pester
log "PSModulePath must include $modules"
echo "$pwsh"

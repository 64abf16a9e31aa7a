#Requires -Version 7.4
<#
.SYNOPSIS
    Builds, tests, demonstrates and packages SSMConnect: the one entry point.

.DESCRIPTION
    Tasks:

      Build    cargo builds the native library (ssm-ffi) and the helper (ssm-cli), dotnet builds the
               module assembly, and the module is laid out under out/SSMConnect/<version>/:
                   SSMConnect.psd1, SSMConnect.Format.ps1xml, en-US/
                   bin/SSMConnect.dll, bin/SSMConnect.Core.dll
                   bin/runtimes/<rid>/native/<native library>, <ssmconnect helper>
               <rid> is the runtime id of this machine (win-x64, linux-arm64, osx-arm64, ...).
      Test     Set up what the tests drive (below), Build, then cargo test --workspace, dotnet test
               (the SSMConnect.Core tests), then the Pester suite in tests/ in a child pwsh, against
               the laid-out module and the emulator. Fails when any of them fails.
      Demo     Build, start the emulator on loopback with the inventory in
               rust/ssm-emulator/demo/inventory.json and open a shell to Name:demo through the module in a child
               pwsh (dummy credentials; type exit to leave).
      Package  Build, then zip out/SSMConnect into out/SSMConnect-<version>-<rid>.zip.
      Clean    Remove out/ and the dotnet build output.
      Bench    Run bench/compare.sh: ssmconnect (release) against the emulator and, with -Plugin or
               SSMCONNECT_BENCH_PLUGIN, against the official session-manager-plugin, both in one
               run; writes a table, JSON and a chart to bench/results/ (bench/README.md). Linux
               (it reads /proc); takes about 10 minutes for ssmconnect alone, twice that with the
               plugin.

    Every task first checks the toolchain (cargo, the .NET SDK) and names what is missing. cargo's
    output directory is asked from cargo (CARGO_TARGET_DIR is honoured).

    Test sets up the rest itself:
      - Pester: a Pester 5.5 or newer already on PSModulePath is used; otherwise the version pinned
        in .config/test-modules.proj is restored from NuGet into the cache folder and put on
        PSModulePath for the test run (nothing is installed from the PowerShell Gallery).
      - AWSSDK.EC2 and AWSSDK.Core (pinned there too), which the suite loads to pipe real
        Amazon.EC2.Model objects into the cmdlets.
      - The programs the suite drives: sshd, ssh, ssh-keygen, dnsmasq, tmux. On Debian as root the
        missing packages are installed with apt-get (their daemons are kept from starting);
        elsewhere a missing one is named with the package to install.
      - Python 3 with moto, and the AWS CLI, are checked and named when missing.
    The cache folder is SSMCONNECT_CACHE, else ~/.cache/ssmconnect (LOCALAPPDATA\ssmconnect on
    Windows).

    PowerShell itself comes from the repository's tool manifest (.config/dotnet-tools.json):
    `dotnet tool restore` then `dotnet pwsh ./build.ps1 ...`. A pwsh 7.4 or newer on PATH works too.

.PARAMETER Task
    Build, Test, Demo, Package or Clean.

.PARAMETER Plugin
    Bench only: the session-manager-plugin binary to compare with (driven by the AWS CLI).

.PARAMETER Configuration
    Debug (the default) or Release; Release builds cargo with --release.

.EXAMPLE
    ./build.ps1

    Builds and lays out the module; Import-Module ./out/SSMConnect/<version>/SSMConnect.psd1 then loads it.

.EXAMPLE
    dotnet tool restore && dotnet pwsh ./build.ps1 -Task Test

    What CI runs on Windows, Linux and macOS: every test, with its own set-up.

.EXAMPLE
    ./build.ps1 -Task Package -Configuration Release

.EXAMPLE
    dotnet pwsh ./build.ps1 -Task Bench -Plugin /opt/session-manager-plugin/bin/session-manager-plugin
#>
[CmdletBinding()]
param(
    [ValidateSet('Build', 'Test', 'Demo', 'Package', 'Clean', 'Bench')]
    [string] $Task = 'Build',

    [ValidateSet('Debug', 'Release')]
    [string] $Configuration = 'Debug',

    [string] $Plugin
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version 3.0

$Root = $PSScriptRoot
$OutDir = Join-Path $Root 'out'
$ModuleSource = Join-Path $Root 'module'
$ModuleProject = Join-Path $Root 'dotnet/SSMConnect/SSMConnect.csproj'
$Solution = Join-Path $Root 'dotnet/SSMConnect.sln'
$Version = (Import-PowerShellDataFile (Join-Path $ModuleSource 'SSMConnect.psd1')).ModuleVersion
$ModuleDir = Join-Path $OutDir "SSMConnect/$Version"
$CargoProfile = if ($Configuration -eq 'Release') { 'release' } else { 'debug' }

function Write-Step([string] $Text) {
    Write-Host "==> $Text" -ForegroundColor Cyan
}

# Where set-up downloads are kept between runs (Pester, the AWS SDK assemblies for the tests).
function Get-CacheDir {
    if ($env:SSMCONNECT_CACHE) { return $env:SSMCONNECT_CACHE }
    if ($IsWindows) { return Join-Path $env:LOCALAPPDATA 'ssmconnect' }
    $base = if ($env:XDG_CACHE_HOME) { $env:XDG_CACHE_HOME } else { Join-Path $HOME '.cache' }
    Join-Path $base 'ssmconnect'
}

# The toolchain every task needs, each missing piece named with where to get it.
function Assert-Toolchain {
    $missing = @()
    if (-not (Get-Command cargo -CommandType Application -ErrorAction SilentlyContinue)) {
        $missing += 'cargo (Rust 1.95 or newer: https://rustup.rs)'
    }
    else {
        $v = (& cargo --version) -replace '^cargo (\d+\.\d+)\..*$', '$1'
        if ([version]$v -lt [version]'1.95') { $missing += "cargo 1.95 or newer (found ${v}: rustup update)" }
    }
    if (-not (Get-Command dotnet -CommandType Application -ErrorAction SilentlyContinue)) {
        $missing += 'the .NET SDK 10 (https://dot.net)'
    }
    if ($missing) {
        throw "missing: $($missing -join '; ')"
    }
}

# True on Debian and its derivatives (apt-get and dpkg present).
function Test-Debian {
    $IsLinux -and (Test-Path /etc/debian_version) -and (Get-Command apt-get -ErrorAction SilentlyContinue)
}

function Test-Root {
    $IsLinux -and ((& id -u) -eq '0')
}

# The programs the test suite drives as real components, by Debian package. Missing ones are
# installed on Debian as root; elsewhere the task stops with their names.
function Install-TestPrograms {
    if ($IsWindows) { return }
    $wanted = [ordered]@{
        'openssh-server' = { Test-Path /usr/sbin/sshd }
        'openssh-client' = { (Get-Command ssh, ssh-keygen -ErrorAction SilentlyContinue).Count -eq 2 }
        'dnsmasq'        = { (Test-Path /usr/sbin/dnsmasq) -or (Get-Command dnsmasq -ErrorAction SilentlyContinue) }
        'tmux'           = { [bool](Get-Command tmux -ErrorAction SilentlyContinue) }
    }
    $missing = @($wanted.Keys | Where-Object { -not (& $wanted[$_]) })
    if ($missing) {
        if ((Test-Debian) -and (Test-Root)) {
            Install-DebianPackages $missing
        }
        else {
            throw "the tests need these programs; install the packages: $($missing -join ' ')"
        }
    }
    $python = Get-Command python3 -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
    if (-not $python) { throw 'the tests need Python 3 with moto (pip install "moto[server]")' }
    & $python.Source -c 'import moto' 2>$null
    if ($LASTEXITCODE -ne 0) { throw 'the tests need the Python package moto (pip install "moto[server]")' }
    if (-not (Get-Command aws -CommandType Application -ErrorAction SilentlyContinue)) {
        throw 'the tests need the AWS CLI on PATH (pip install awscli)'
    }
}

# apt-get install, with the packages' daemons (sshd on :22, dnsmasq on :53) kept from starting:
# a policy-rc.d answering 101 for the install, and their units disabled afterwards. The tests
# start their own instances on loopback ports.
function Install-DebianPackages([string[]] $Packages) {
    Write-Step "Set-up: apt-get install $($Packages -join ' ')"
    $policy = '/usr/sbin/policy-rc.d'
    $backup = $null
    if (Test-Path $policy) {
        $backup = [IO.Path]::GetTempFileName()
        Copy-Item $policy $backup -Force
    }
    Set-Content -LiteralPath $policy -Value "#!/bin/sh`nexit 101" -NoNewline
    & chmod 755 $policy
    $saved = $env:DEBIAN_FRONTEND
    try {
        $env:DEBIAN_FRONTEND = 'noninteractive'
        Invoke-Tool apt-get @('-q', '-o', 'DPkg::Lock::Timeout=300', 'update')
        Invoke-Tool apt-get (@('-q', '-o', 'DPkg::Lock::Timeout=300', 'install', '-y', '--no-install-recommends') + $Packages)
    }
    finally {
        $env:DEBIAN_FRONTEND = $saved
        if ($backup) { Move-Item $backup $policy -Force } else { Remove-Item $policy -Force }
    }
    if (Test-Path /run/systemd/system) {
        $units = @{ 'openssh-server' = 'ssh'; 'dnsmasq' = 'dnsmasq' }
        foreach ($p in $Packages | Where-Object { $units.ContainsKey($_) }) {
            & systemctl disable --now $units[$p] 2>&1 | Out-Null
        }
    }
}

# The test suite's PowerShell modules and assemblies from NuGet (.config/test-modules.proj):
# returns the module folder to put on PSModulePath (empty when a usable Pester is present) and
# the paths of AWSSDK.Core.dll and AWSSDK.EC2.dll.
function Initialize-TestModules {
    $cache = Get-CacheDir
    $packages = Join-Path $cache 'nuget'
    $proj = Join-Path $Root '.config/test-modules.proj'
    [xml]$pins = Get-Content -LiteralPath $proj -Raw
    $pin = @{}
    foreach ($d in $pins.Project.ItemGroup.PackageDownload) { $pin[$d.Include] = $d.Version.Trim('[', ']') }

    $wantedFiles = @(
        "pester/$($pin.Pester)/tools/Pester.psd1"
        "awssdk.ec2/$($pin['AWSSDK.EC2'])/lib/net8.0/AWSSDK.EC2.dll"
        "awssdk.core/$($pin['AWSSDK.Core'])/lib/net8.0/AWSSDK.Core.dll"
    )
    if (@($wantedFiles | Where-Object { -not (Test-Path (Join-Path $packages $_)) }).Count) {
        Write-Step "Set-up: NuGet packages for the tests ($(($pin.Keys | Sort-Object | ForEach-Object { "$_ $($pin[$_])" }) -join ', '))"
        $obj = Join-Path $cache 'obj/'
        Invoke-Tool dotnet @('restore', $proj, '--nologo', "-p:RestorePackagesPath=$packages", "-p:MSBuildProjectExtensionsPath=$obj")
        foreach ($f in $wantedFiles) {
            if (-not (Test-Path (Join-Path $packages $f))) { throw "the NuGet restore produced no $f" }
        }
    }

    $modulePath = ''
    $present = Get-Module Pester -ListAvailable | Where-Object Version -GE ([version]'5.5.0') | Select-Object -First 1
    if ($present) {
        Write-Host "    Pester $($present.Version) found at $($present.ModuleBase)"
    }
    else {
        # PSModulePath wants <folder>/Pester/<version>/Pester.psd1; the package holds it in tools/.
        $modulePath = Join-Path $cache 'modules'
        $target = Join-Path $modulePath "Pester/$($pin.Pester)"
        if (-not (Test-Path (Join-Path $target 'Pester.psd1'))) {
            $stage = "$target.partial"
            if (Test-Path $stage) { Remove-Item $stage -Recurse -Force }
            New-Item -ItemType Directory -Path (Split-Path $stage) -Force | Out-Null
            Copy-Item (Join-Path $packages "pester/$($pin.Pester)/tools") $stage -Recurse
            Move-Item $stage $target
        }
        Write-Host "    Pester $($pin.Pester) from NuGet: $target"
    }
    [pscustomobject]@{
        ModulePath       = $modulePath
        # Core first: EC2 needs it loaded.
        AwsSdkAssemblies = @($wantedFiles[2], $wantedFiles[1] | ForEach-Object { Join-Path $packages $_ })
    }
}

# Runs a native command with an argument array and fails the build when it fails. Its output goes
# to the console, never into the calling function's output.
function Invoke-Tool {
    param(
        [Parameter(Mandatory)] [string] $FilePath,
        [string[]] $ArgumentList = @()
    )
    Write-Host "    $FilePath $($ArgumentList -join ' ')" -ForegroundColor DarkGray
    & $FilePath @ArgumentList | Out-Host
    if ($LASTEXITCODE -ne 0) {
        throw "$FilePath $($ArgumentList -join ' ') failed with exit code $LASTEXITCODE"
    }
}

# The runtime id of this machine, as the module's native loader computes it.
function Get-RuntimeId {
    $os = if ($IsWindows) { 'win' } elseif ($IsMacOS) { 'osx' } else { 'linux' }
    $arch = switch ([System.Runtime.InteropServices.RuntimeInformation]::ProcessArchitecture.ToString()) {
        'X64' { 'x64' }
        'Arm64' { 'arm64' }
        'X86' { 'x86' }
        'Arm' { 'arm' }
        default { throw "unsupported process architecture $_" }
    }
    "$os-$arch"
}

function Get-NativeFileName {
    if ($IsWindows) { 'ssmconnect_native.dll' } elseif ($IsMacOS) { 'libssmconnect_native.dylib' } else { 'libssmconnect_native.so' }
}

function Get-ExeName([string] $Name) {
    if ($IsWindows) { "$Name.exe" } else { $Name }
}

# cargo's output directory for the chosen profile.
function Get-CargoOutputDir {
    $json = & cargo metadata --format-version 1 --no-deps
    if ($LASTEXITCODE -ne 0) { throw 'cargo metadata failed' }
    Join-Path ($json | ConvertFrom-Json).target_directory $CargoProfile
}

function Invoke-Cargo([string[]] $Arguments) {
    Push-Location $Root
    try {
        if ($Configuration -eq 'Release') { $Arguments += '--release' }
        Invoke-Tool cargo $Arguments
    }
    finally {
        Pop-Location
    }
}

# Runs $Script with environment variables set (a $null value removes one), then restores them.
function Invoke-WithEnvironment([hashtable] $Variables, [scriptblock] $Script) {
    # Through env: rather than [Environment]::SetEnvironmentVariable, which PowerShell would hand
    # an empty string for $null, leaving the variable set but empty.
    function Set-EnvironmentValue([string] $Name, $Value) {
        if ($null -eq $Value) { Remove-Item "env:$Name" -ErrorAction SilentlyContinue } else { Set-Item "env:$Name" $Value }
    }
    $saved = @{}
    foreach ($name in $Variables.Keys) {
        $saved[$name] = [Environment]::GetEnvironmentVariable($name)
        Set-EnvironmentValue $name $Variables[$name]
    }
    try {
        & $Script
    }
    finally {
        foreach ($name in $saved.Keys) { Set-EnvironmentValue $name $saved[$name] }
    }
}

# The command that runs this PowerShell again, for child sessions (the module's native library
# cannot be unloaded, so the build session never imports it): pwsh, or the dotnet host and
# pwsh.dll when PowerShell runs as a .NET tool (dotnet pwsh). Returns the executable and the
# arguments that go before the child's own.
function Get-Pwsh {
    $path = (Get-Process -Id $PID).Path
    if ($path -and (Split-Path -Leaf $path) -match '^pwsh(\.exe)?$') { return , @($path) }
    $dll = Join-Path $PSHOME 'pwsh.dll'
    if ($path -and (Test-Path $dll)) { return , @($path, $dll) }
    , @((Get-Command pwsh -CommandType Application -ErrorAction Stop | Select-Object -First 1).Source)
}

# Builds with cargo and lays out the module. $CargoSelection is what cargo builds in one
# invocation; it must hold ssm-ffi and ssm-cli. cargo unifies dependency features over what one
# invocation selects, so each different selection rebuilds the AWS SDK crates: Build, Demo and
# Package share one (with the emulator, which Demo runs), and Test selects what
# `cargo test --workspace` builds, so that the tests reuse it.
function Invoke-Build([string[]] $CargoSelection = @('-p', 'ssm-ffi', '-p', 'ssm-cli', '-p', 'ssm-emulator')) {
    $rid = Get-RuntimeId
    Write-Step "Build ($Configuration, $rid): cargo"
    Invoke-Cargo (@('build', '--locked') + $CargoSelection)
    $cargoOut = Get-CargoOutputDir

    Write-Step 'Build: dotnet'
    Invoke-Tool dotnet @('build', $ModuleProject, '-c', $Configuration, '--nologo')
    $assemblies = Join-Path $Root "dotnet/SSMConnect/bin/$Configuration/net8.0"

    Write-Step "Layout: $ModuleDir"
    if (Test-Path $ModuleDir) { Remove-Item $ModuleDir -Recurse -Force }
    $bin = Join-Path $ModuleDir 'bin'
    $native = Join-Path $bin "runtimes/$rid/native"
    New-Item -ItemType Directory -Path $native -Force | Out-Null

    Copy-Item (Join-Path $ModuleSource 'SSMConnect.psd1') $ModuleDir
    Copy-Item (Join-Path $ModuleSource '*.ps1xml') $ModuleDir
    Copy-Item (Join-Path $ModuleSource 'en-US') $ModuleDir -Recurse
    foreach ($name in 'SSMConnect.dll', 'SSMConnect.Core.dll') {
        Copy-Item (Join-Path $assemblies $name) $bin
        $pdb = [IO.Path]::ChangeExtension((Join-Path $assemblies $name), '.pdb')
        if (Test-Path $pdb) { Copy-Item $pdb $bin }
    }
    foreach ($name in (Get-NativeFileName), (Get-ExeName 'ssmconnect')) {
        $source = Join-Path $cargoOut $name
        if (-not (Test-Path $source)) { throw "cargo produced no $source" }
        Copy-Item $source $native
    }
    Write-Host "    module ready: $(Join-Path $ModuleDir 'SSMConnect.psd1')"
}

function Invoke-Test {
    Write-Step 'Set-up: test programs and modules'
    Install-TestPrograms
    $testModules = Initialize-TestModules
    Invoke-Build @('--workspace', '--all-targets')
    $cargoOut = Get-CargoOutputDir
    $emulator = Join-Path $cargoOut (Get-ExeName 'ssm-emulator')

    Write-Step 'Test: cargo'
    Invoke-Cargo @('test', '--workspace', '--locked')

    Write-Step 'Test: dotnet'
    Invoke-WithEnvironment @{
        SSMCONNECT_NATIVE_PATH = Join-Path $cargoOut (Get-NativeFileName)
        SSMCONNECT_HELPER_PATH = Join-Path $cargoOut (Get-ExeName 'ssmconnect')
        SSMCONNECT_EMULATOR    = $emulator
    } {
        Invoke-Tool dotnet @('test', $Solution, '-c', $Configuration, '--nologo')
    }

    Write-Step 'Test: Pester (child pwsh)'
    # The module must find its native library and helper in its own layout here.
    $modulePath = $env:PSModulePath
    if ($testModules.ModulePath) { $modulePath = $testModules.ModulePath + [IO.Path]::PathSeparator + $modulePath }
    Invoke-WithEnvironment @{
        SSMCONNECT_NATIVE_PATH     = $null
        SSMCONNECT_HELPER_PATH     = $null
        SSMCONNECT_MODULE_MANIFEST = Join-Path $ModuleDir 'SSMConnect.psd1'
        SSMCONNECT_EMULATOR        = $emulator
        SSMCONNECT_TEST_AWSSDK     = $testModules.AwsSdkAssemblies -join [IO.Path]::PathSeparator
        PSModulePath               = $modulePath
    } {
        Push-Location $Root
        try {
            # Invoke-Pester -Path ./tests -CI, with the result file under out/.
            $pester = @(
                'Import-Module Pester -MinimumVersion 5.5'
                '$c = New-PesterConfiguration'
                "`$c.Run.Path = './tests'"
                '$c.Run.Exit = $true'
                '$c.TestResult.Enabled = $true'
                "`$c.TestResult.OutputPath = './out/testResults.xml'"
                "`$c.Output.Verbosity = 'Detailed'"
                # Plain text when the output goes to a file or pipe (CI logs), colours on a terminal.
                "`$c.Output.RenderMode = '$(if ([Console]::IsOutputRedirected) { 'Plaintext' } else { 'Auto' })'"
                'Invoke-Pester -Configuration $c'
            ) -join '; '
            $pwsh = Get-Pwsh
            Invoke-Tool $pwsh[0] (@($pwsh | Select-Object -Skip 1) + @('-NoProfile', '-NonInteractive', '-Command', $pester))
        }
        finally {
            Pop-Location
        }
    }
}

function Invoke-Demo {
    Invoke-Build
    $cargoOut = Get-CargoOutputDir

    Write-Step 'Demo: emulator'
    $inventory = Join-Path $Root 'rust/ssm-emulator/demo/inventory.json'
    $psi = [System.Diagnostics.ProcessStartInfo]::new((Join-Path $cargoOut (Get-ExeName 'ssm-emulator')))
    $psi.ArgumentList.Add('--inventory')
    $psi.ArgumentList.Add($inventory)
    $psi.RedirectStandardInput = $true
    $psi.RedirectStandardOutput = $true
    $psi.UseShellExecute = $false
    $emulator = [System.Diagnostics.Process]::Start($psi)
    try {
        $endpoint = ($emulator.StandardOutput.ReadLine() | ConvertFrom-Json).endpoint
        if (-not $endpoint) { throw 'the emulator printed no endpoint' }
        Write-Host "    emulator at $endpoint"

        Write-Step 'Demo: Start-SSMShellSession (type exit to leave)'
        $manifest = (Join-Path $ModuleDir 'SSMConnect.psd1') -replace "'", "''"
        # A child pwsh, so that this session never loads the native library; run as a plain
        # statement so that the shell gets this terminal.
        # AWS_ENDPOINT_URL points SSM and EC2 (tag resolution) at the emulator.
        $demo = "`$env:AWS_ENDPOINT_URL = '$endpoint'; Import-Module '$manifest'; " +
            "Start-SSMShellSession -Target Name:demo -Region us-east-1 " +
            "-AccessKey AKIDEXAMPLE -SecretKey wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY; " +
            "'the shell session ended'"
        $pwsh = Get-Pwsh
        $rest = @($pwsh | Select-Object -Skip 1)
        & $pwsh[0] @rest -NoProfile -Command $demo
    }
    finally {
        # The emulator exits when its stdin closes.
        $emulator.StandardInput.Close()
        if (-not $emulator.WaitForExit(10000)) { $emulator.Kill($true) }
        $emulator.Dispose()
    }
}

function Invoke-Package {
    Invoke-Build
    $zip = Join-Path $OutDir "SSMConnect-$Version-$(Get-RuntimeId).zip"
    Write-Step "Package: $zip"
    if (Test-Path $zip) { Remove-Item $zip -Force }
    Add-Type -AssemblyName System.IO.Compression.FileSystem
    # Entries are SSMConnect/<version>/...: unzip into a folder on PSModulePath. On Unix, .NET
    # records the files' permissions, so the helper stays executable.
    [System.IO.Compression.ZipFile]::CreateFromDirectory(
        (Join-Path $OutDir 'SSMConnect'), $zip, [System.IO.Compression.CompressionLevel]::Optimal, $true)
    Write-Host "    $zip"
}

# The comparison benchmark: bench/compare.sh builds in release and runs it (always release,
# whatever -Configuration says).
function Invoke-Bench {
    if ($IsWindows) { throw 'the benchmark reads /proc: run it on Linux' }
    $variables = @{}
    if ($Plugin) {
        $path = (Resolve-Path -LiteralPath $Plugin -ErrorAction Stop).Path
        $variables['SSMCONNECT_BENCH_PLUGIN'] = $path
    }
    Write-Step "Bench: bench/compare.sh$(if ($variables.Count) { " (plugin: $($variables['SSMCONNECT_BENCH_PLUGIN']))" })"
    Push-Location $Root
    try {
        Invoke-WithEnvironment $variables { Invoke-Tool sh @((Join-Path $Root 'bench/compare.sh')) }
    }
    finally {
        Pop-Location
    }
}

function Invoke-Clean {
    Write-Step 'Clean'
    if (Test-Path $OutDir) { Remove-Item $OutDir -Recurse -Force }
    foreach ($project in Get-ChildItem (Join-Path $Root 'dotnet') -Directory) {
        foreach ($dir in 'bin', 'obj', 'TestResults') {
            $path = Join-Path $project.FullName $dir
            if (Test-Path $path) { Remove-Item $path -Recurse -Force }
        }
    }
}

if ($Task -ne 'Clean') { Assert-Toolchain }
switch ($Task) {
    'Build' { Invoke-Build }
    'Test' { Invoke-Test }
    'Demo' { Invoke-Demo }
    'Package' { Invoke-Package }
    'Clean' { Invoke-Clean }
    'Bench' { Invoke-Bench }
}

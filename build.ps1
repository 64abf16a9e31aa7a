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
      Test     Build, then cargo test --workspace, dotnet test (the SSMConnect.Core tests), then the
               Pester suite in tests/ in a child pwsh, against the laid-out module and the emulator.
      Demo     Build, start the emulator on loopback with the inventory in
               rust/ssm-emulator/demo/inventory.json and open a shell to Name:demo through the module in a child
               pwsh (dummy credentials; type exit to leave).
      Package  Build, then zip out/SSMConnect into out/SSMConnect-<version>-<rid>.zip.
      Clean    Remove out/ and the dotnet build output.

    cargo's output directory is asked from cargo (CARGO_TARGET_DIR is honoured). Pester 5 must be
    installed for Test (Install-Module Pester -MinimumVersion 5.5).

.PARAMETER Task
    Build, Test, Demo, Package or Clean.

.PARAMETER Configuration
    Debug (the default) or Release; Release builds cargo with --release.

.EXAMPLE
    ./build.ps1

    Builds and lays out the module; Import-Module ./out/SSMConnect/<version>/SSMConnect.psd1 then loads it.

.EXAMPLE
    pwsh ./build.ps1 -Task Test

    What CI runs on Windows, Linux and macOS.

.EXAMPLE
    ./build.ps1 -Task Package -Configuration Release
#>
[CmdletBinding()]
param(
    [ValidateSet('Build', 'Test', 'Demo', 'Package', 'Clean')]
    [string] $Task = 'Build',

    [ValidateSet('Debug', 'Release')]
    [string] $Configuration = 'Debug'
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

# Runs a native command with an argument array and fails the build when it fails.
function Invoke-Tool {
    param(
        [Parameter(Mandatory)] [string] $FilePath,
        [string[]] $ArgumentList = @()
    )
    Write-Host "    $FilePath $($ArgumentList -join ' ')" -ForegroundColor DarkGray
    & $FilePath @ArgumentList
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
    if ($IsWindows) { 'ssmconnect.dll' } elseif ($IsMacOS) { 'libssmconnect.dylib' } else { 'libssmconnect.so' }
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
    $saved = @{}
    foreach ($name in $Variables.Keys) {
        $saved[$name] = [Environment]::GetEnvironmentVariable($name)
        [Environment]::SetEnvironmentVariable($name, $Variables[$name])
    }
    try {
        & $Script
    }
    finally {
        foreach ($name in $saved.Keys) {
            [Environment]::SetEnvironmentVariable($name, $saved[$name])
        }
    }
}

# The pwsh running this script, for child sessions (the module's native library cannot be
# unloaded, so the build session never imports it).
function Get-Pwsh {
    $path = (Get-Process -Id $PID).Path
    if ($path -and (Split-Path -Leaf $path) -match '^pwsh(\.exe)?$') { return $path }
    (Get-Command pwsh -CommandType Application -ErrorAction Stop | Select-Object -First 1).Source
}

function Invoke-Build {
    $rid = Get-RuntimeId
    Write-Step "Build ($Configuration, $rid): cargo"
    Invoke-Cargo @('build', '-p', 'ssm-ffi', '-p', 'ssm-cli')
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
    Invoke-Build
    $cargoOut = Get-CargoOutputDir
    Invoke-Cargo @('build', '-p', 'ssm-emulator')
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
    Invoke-WithEnvironment @{
        SSMCONNECT_NATIVE_PATH     = $null
        SSMCONNECT_HELPER_PATH     = $null
        SSMCONNECT_MODULE_MANIFEST = Join-Path $ModuleDir 'SSMConnect.psd1'
        SSMCONNECT_EMULATOR        = $emulator
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
                'Invoke-Pester -Configuration $c'
            ) -join '; '
            Invoke-Tool (Get-Pwsh) @('-NoProfile', '-NonInteractive', '-Command', $pester)
        }
        finally {
            Pop-Location
        }
    }
}

function Invoke-Demo {
    Invoke-Build
    $cargoOut = Get-CargoOutputDir
    Invoke-Cargo @('build', '-p', 'ssm-emulator')

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
            "'remote shell exited with ' + `$LASTEXITCODE"
        & (Get-Pwsh) -NoProfile -Command $demo
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

switch ($Task) {
    'Build' { Invoke-Build }
    'Test' { Invoke-Test }
    'Demo' { Invoke-Demo }
    'Package' { Invoke-Package }
    'Clean' { Invoke-Clean }
}

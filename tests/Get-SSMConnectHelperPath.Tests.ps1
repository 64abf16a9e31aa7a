# Get-SSMConnectHelperPath: the bundled helper, as ssh_config's ProxyCommand would run it.

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force -Global
    Import-TestModule
    $moduleBase = Split-Path -Parent (Get-TestModuleManifest)
    $helperName = if ($IsWindows) { 'ssmconnect.exe' } else { 'ssmconnect' }
}

Describe 'Get-SSMConnectHelperPath' {
    It 'writes the full path of the helper in the module layout' {
        $path = Get-SSMConnectHelperPath
        $path | Should -BeOfType ([string])
        [IO.Path]::IsPathRooted($path) | Should -BeTrue
        $path | Should -Exist
        Split-Path -Leaf $path | Should -Be $helperName
        $path | Should -BeLike "$([IO.Path]::GetFullPath($moduleBase))*"
    }

    It 'is the helper that runs' {
        $version = & (Get-SSMConnectHelperPath) --version
        $LASTEXITCODE | Should -Be 0
        "$version" | Should -Match '^ssmconnect \d+\.\d+\.\d+'
    }

    It 'honours SSMCONNECT_HELPER_PATH, and reports a helper that is not there as SSMConnect.HelperNotFound' {
        $missing = New-TestTempPath 'no-helper'
        $saved = $env:SSMCONNECT_HELPER_PATH
        try {
            $env:SSMCONNECT_HELPER_PATH = $missing
            { Get-SSMConnectHelperPath -ErrorAction Stop } | Should -Throw -ErrorId 'SSMConnect.HelperNotFound,*'
            $env:SSMCONNECT_HELPER_PATH = Get-Process -Id $PID | Select-Object -ExpandProperty Path
            Get-SSMConnectHelperPath | Should -Be ((Get-Process -Id $PID).Path)
        }
        finally {
            $env:SSMCONNECT_HELPER_PATH = $saved
        }
    }
}

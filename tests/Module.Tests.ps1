# The laid-out module: manifest, exports, help, format data, native loading.

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force -Global
    $manifestPath = Get-TestModuleManifest
    $manifest = Import-PowerShellDataFile $manifestPath
    $moduleBase = Split-Path -Parent $manifestPath
    $expected = 'Get-SSMPortForward', 'Start-SSMPortForward', 'Start-SSMShellSession', 'Start-SSMSshSession', 'Stop-SSMPortForward'
    Import-TestModule
}

Describe 'SSMConnect module' {
    It 'has a valid manifest for PowerShell 7.4 with explicit exports' {
        Test-ModuleManifest $manifestPath -ErrorAction Stop | Should -Not -BeNullOrEmpty
        $manifest.PowerShellVersion | Should -Be '7.4'
        $manifest.RootModule | Should -Be 'bin/SSMConnect.dll'
        foreach ($key in 'CmdletsToExport', 'FunctionsToExport', 'VariablesToExport', 'AliasesToExport') {
            $manifest.ContainsKey($key) | Should -BeTrue -Because "$key must be listed, not left to a wildcard"
            @($manifest[$key]) -join ',' | Should -Not -Match '\*'
        }
        @($manifest.CmdletsToExport | Sort-Object) | Should -Be $expected
    }

    It 'exports exactly the five cmdlets' {
        $commands = Get-Command -Module SSMConnect | Sort-Object Name
        @($commands.Name) | Should -Be $expected
        $commands | ForEach-Object { $_.CommandType | Should -Be 'Cmdlet' }
    }

    It 'is laid out with the native library and the helper under bin/runtimes/<rid>/native' {
        $rid = [SSMConnect.Native.NativeLibraryLoader]::CurrentRid
        $native = Join-Path $moduleBase "bin/runtimes/$rid/native"
        Join-Path $native ([SSMConnect.Native.NativeLibraryLoader]::CurrentFileName) | Should -Exist
        Join-Path $native $(if ($IsWindows) { 'ssmconnect.exe' } else { 'ssmconnect' }) | Should -Exist
        [SSMConnect.Native.NativeLibraryLoader]::LoadedFrom | Should -BeLike "$native*"
        [SSMConnect.SsmClient]::NativeVersion | Should -Match '^\d+\.\d+\.\d+'
    }

    It 'fails to import with the list of paths tried when the native library is missing' {
        $pwsh = (Get-Process -Id $PID).Path
        $missing = Join-Path ([IO.Path]::GetTempPath()) "no-such-dir-$([guid]::NewGuid().ToString('N'))"
        $saved = $env:SSMCONNECT_NATIVE_PATH
        try {
            $env:SSMCONNECT_NATIVE_PATH = $missing
            # The child prints the exception chain, so that no error formatting wraps the paths.
            $script = "try { Import-Module '$($manifestPath -replace "'", "''")' -ErrorAction Stop; exit 0 } " +
                'catch { $e = $_.Exception; while ($e) { $e.Message; $e = $e.InnerException }; exit 3 }'
            $out = & $pwsh -NoProfile -NonInteractive -Command $script | Out-String
            $LASTEXITCODE | Should -Be 3
        }
        finally {
            $env:SSMCONNECT_NATIVE_PATH = $saved
        }
        $out | Should -Match ([regex]::Escape($missing))
        $out | Should -Match 'SSMCONNECT_NATIVE_PATH'
    }

    It 'imports by name from a module path' {
        $root = Split-Path -Parent (Split-Path -Parent $moduleBase)
        $pwsh = (Get-Process -Id $PID).Path
        $saved = $env:PSModulePath
        try {
            $env:PSModulePath = $root + [IO.Path]::PathSeparator + $env:PSModulePath
            $names = & $pwsh -NoProfile -NonInteractive -Command 'Import-Module SSMConnect -ErrorAction Stop; (Get-Command -Module SSMConnect).Name -join ","'
            $LASTEXITCODE | Should -Be 0
        }
        finally {
            $env:PSModulePath = $saved
        }
        ($names -split ',' | Sort-Object) | Should -Be $expected
    }

    It 'has a table view for the forward object' {
        $format = Get-FormatData -TypeName SSMConnect.PortForward
        $format | Should -Not -BeNullOrEmpty
        @($format.FormatViewDefinition | ForEach-Object { $_.Control.GetType().Name }) | Should -Contain 'TableControl'
    }

    It 'ships about_SSMConnect' {
        Join-Path $moduleBase 'en-US/about_SSMConnect.help.txt' | Should -Exist
        Get-Content (Join-Path $moduleBase 'en-US/about_SSMConnect.help.txt') -Raw | Should -Match 'about_SSMConnect'
    }
}

Describe 'Help for <_>' -ForEach @('Get-SSMPortForward', 'Start-SSMPortForward', 'Start-SSMShellSession', 'Start-SSMSshSession', 'Stop-SSMPortForward') {
    BeforeAll {
        $help = Get-Help $_ -Full
    }

    It 'has a synopsis and a description from the MAML file' {
        $help.Synopsis | Should -Not -BeNullOrEmpty
        # Without a help file PowerShell shows the syntax as the synopsis.
        $help.Synopsis | Should -Not -Match '^\s*\S+-SSM\S+ \['
        ($help.Description | Out-String) | Should -Not -BeNullOrEmpty
    }

    It 'has at least one example' {
        @($help.Examples.Example).Count | Should -BeGreaterOrEqual 1
        foreach ($example in $help.Examples.Example) {
            $example.Code | Should -Match 'SSM'
        }
    }

    It 'documents every parameter' {
        $command = Get-Command $_
        $common = [System.Management.Automation.PSCmdlet]::CommonParameters + [System.Management.Automation.PSCmdlet]::OptionalCommonParameters
        $documented = @($help.Parameters.Parameter.Name)
        foreach ($name in $command.Parameters.Keys | Where-Object { $_ -notin $common }) {
            $documented | Should -Contain $name
        }
    }
}

Describe 'Help for Start-SSMSshSession' {
    It 'shows the AWS Tools pipeline example' {
        $code = (Get-Help Start-SSMSshSession -Examples).Examples.Example.Code -join "`n"
        $code | Should -Match ([regex]::Escape("Get-EC2Instance -Filter @{Name='tag:Name';Values='web'} | Select-Object -ExpandProperty Instances | Start-SSMSshSession -User ec2-user -IdentityFile ~/.ssh/web.pem"))
    }
}

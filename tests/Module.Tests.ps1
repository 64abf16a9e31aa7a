# The laid-out module: manifest, exports, help, format data, native loading.

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force -Global
    $manifestPath = Get-TestModuleManifest
    $manifest = Import-PowerShellDataFile $manifestPath
    $moduleBase = Split-Path -Parent $manifestPath
    $expected = 'Get-SSMConnectHelperPath', 'Get-SSMPortForward', 'Invoke-SSMSessionCommand', 'Start-SSMPortForward', 'Start-SSMRdpSession', 'Start-SSMShellSession', 'Start-SSMSshSession', 'Stop-SSMPortForward'
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

    It 'exports exactly the eight cmdlets' {
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
        $missing = New-TestTempPath 'no-such-dir'
        $saved = $env:SSMCONNECT_NATIVE_PATH
        try {
            $env:SSMCONNECT_NATIVE_PATH = $missing
            # The child prints the exception chain, so that no error formatting wraps the paths.
            $script = "try { Import-Module '$($manifestPath -replace "'", "''")' -ErrorAction Stop; exit 0 } " +
                'catch { $e = $_.Exception; while ($e) { $e.Message; $e = $e.InnerException }; exit 3 }'
            $out = Invoke-Pwsh -NoProfile -NonInteractive -Command $script | Out-String
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
        $saved = $env:PSModulePath
        try {
            $env:PSModulePath = $root + [IO.Path]::PathSeparator + $env:PSModulePath
            $names = Invoke-Pwsh -NoProfile -NonInteractive -Command 'Import-Module SSMConnect -ErrorAction Stop; (Get-Command -Module SSMConnect).Name -join ","'
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

Describe 'Help for <_>' -ForEach @('Get-SSMConnectHelperPath', 'Get-SSMPortForward', 'Invoke-SSMSessionCommand', 'Start-SSMPortForward', 'Start-SSMRdpSession', 'Start-SSMShellSession', 'Start-SSMSshSession', 'Stop-SSMPortForward') {
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
        $command = Get-Command $_ -ErrorAction Stop
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

# Tab completion through TabExpansion2, as the console runs it. -Target asks the emulator's EC2
# in a child pwsh whose environment holds no credentials, region or instance metadata, so that
# only what is typed on the line can make DescribeInstances work.
Describe 'Argument completion' -Skip:$IsWindows {
    BeforeAll {
        $emu = Start-Emulator -Config @{
            inventory = @(
                @{ instance_id = 'i-0123456789abcdef0'; tags = @{ Name = 'web' } }
                @{ instance_id = 'i-0aaaaaaaaaaaaaaa1'; tags = @{ Name = 'my app' } }
                @{ instance_id = 'i-0bbbbbbbbbbbbbbb2' }
                @{ instance_id = 'i-0ccccccccccccccc3'; state = 'stopped'; tags = @{ Name = 'old' } }
            )
        }
        $empty = New-TestTempPath 'ssmc-completion-home'
        New-Item -ItemType Directory -Path $empty | Out-Null
        $environment = @{
            HOME                      = $empty
            AWS_ENDPOINT_URL_EC2      = $emu.Endpoint
            AWS_EC2_METADATA_DISABLED = 'true'
        }
        # Prints each completion of each line (cursor at its end) as "<n>|<text>|<tooltip>".
        $complete = {
            param($Manifest, $EmulatorPid, $LinesJson)
            Import-Module $Manifest -ErrorAction Stop
            $Lines = @($LinesJson | ConvertFrom-Json)
            $n = 0
            foreach ($line in $Lines) {
                $n++
                if ($line -eq '<stop emulator>') { Stop-Process -Id $EmulatorPid; Start-Sleep -Milliseconds 500; continue }
                foreach ($m in (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches) {
                    "$n|$($m.CompletionText)|$($m.ToolTip)"
                }
            }
        }
        function Invoke-Completion([string[]] $Lines) {
            $child = Invoke-ChildPwsh -Environment $environment -ScriptBlock $complete -ArgumentList @((Get-TestModuleManifest), $emu.Process.Id, (ConvertTo-Json -InputObject @($Lines) -Compress))
            $child.ExitCode | Should -Be 0 -Because $child.Errors
            $child.Output
        }
        $typed = "-EndpointUrl $($emu.Endpoint) -Region $TestRegion -AccessKey $TestAccessKey -SecretKey $TestSecretKey"
    }

    AfterAll {
        Stop-Emulator $emu
        Remove-Item -LiteralPath $empty -Recurse -Force -ErrorAction SilentlyContinue
    }

    It '-Region completes region names' {
        $names = (TabExpansion2 -inputScript ($line = 'Start-SSMShellSession -Region eu-we') -cursorColumn $line.Length).CompletionMatches.CompletionText
        $names | Should -Be @('eu-west-1', 'eu-west-2', 'eu-west-3')
        $all = (TabExpansion2 -inputScript ($line = 'Invoke-SSMSessionCommand -Region ') -cursorColumn $line.Length).CompletionMatches.CompletionText
        $all | Should -Contain 'us-east-1'
        $all | Should -Contain 'ap-southeast-2'
    }

    It '-Id of Get- and Stop-SSMPortForward completes the live forwards' {
        $echo = Start-EchoServer
        try {
            $emuAws = $emu.AwsParameters
            $f = Start-SSMPortForward -Target i-0123456789abcdef0 -RemotePort $echo.Port @emuAws
            foreach ($command in 'Get-SSMPortForward', 'Stop-SSMPortForward') {
                $matches_ = (TabExpansion2 -inputScript ($line = "$command -Id ") -cursorColumn $line.Length).CompletionMatches
                $matches_.CompletionText | Should -Contain "$($f.Id)"
                ($matches_ | Where-Object CompletionText -EQ "$($f.Id)").ToolTip | Should -Match ([regex]::Escape($f.LocalEndpoint))
            }
            $f | Stop-SSMPortForward
            $after = (TabExpansion2 -inputScript ($line = 'Get-SSMPortForward -Id ') -cursorColumn $line.Length).CompletionMatches.CompletionText
            $after | Should -Not -Contain "$($f.Id)"
        }
        finally {
            $echo.Dispose()
        }
    }

    It '-Target completes running instances by id and Name tag, on every session cmdlet, with what is typed' {
        $cmdlets = 'Start-SSMShellSession', 'Start-SSMPortForward', 'Start-SSMSshSession', 'Invoke-SSMSessionCommand'
        $lines = @($cmdlets | ForEach-Object { "$_ $typed -Target " }) + @(
            "Invoke-SSMSessionCommand $typed -Target Name:w"
            "Invoke-SSMSessionCommand $typed -Target my"
            "Invoke-SSMSessionCommand $typed -Target i-0a"
            # Without the keys, or without the region, there is nothing to ask EC2 with.
            "Invoke-SSMSessionCommand -Region $TestRegion -Target "
            "Invoke-SSMSessionCommand -AccessKey $TestAccessKey -SecretKey $TestSecretKey -Target "
        )
        $out = Invoke-Completion $lines
        $running = @("'Name:my app'", 'Name:web', 'i-0123456789abcdef0', 'i-0aaaaaaaaaaaaaaa1', 'i-0bbbbbbbbbbbbbbb2')
        foreach ($n in 1..4) {
            $texts = @($out | Where-Object { $_ -like "$n|*" } | ForEach-Object { ($_ -split '\|')[1] })
            $texts | Should -Be $running -Because "$($cmdlets[$n - 1]) completes -Target"
        }
        $out | Should -Contain '1|Name:web|web (i-0123456789abcdef0)'
        @($out | Where-Object { $_ -like '5|*' }) | Should -Be @('5|Name:web|web (i-0123456789abcdef0)')
        @($out | Where-Object { $_ -like '6|*' }) | Should -Be @("6|'Name:my app'|my app (i-0aaaaaaaaaaaaaaa1)")
        @($out | Where-Object { $_ -like '7|*' }) | Should -Be @('7|i-0aaaaaaaaaaaaaaa1|my app (i-0aaaaaaaaaaaaaaa1)')
        @($out | Where-Object { $_ -like '8|*' -or $_ -like '9|*' }) | Should -BeNullOrEmpty
        $out -join "`n" | Should -Not -Match 'old|i-0ccccccccccccccc3' -Because 'stopped instances are no targets'
    }

    It '-Target reuses a recent answer for the same parameters' {
        $out = Invoke-Completion @(
            "Start-SSMShellSession $typed -Target i-01"
            '<stop emulator>'
            "Start-SSMShellSession $typed -Target i-01"
            "Start-SSMShellSession $($typed -replace $TestRegion, 'us-west-2') -Target i-01"
        )
        $out | Should -Contain '1|i-0123456789abcdef0|web (i-0123456789abcdef0)'
        $out | Should -Contain '3|i-0123456789abcdef0|web (i-0123456789abcdef0)'
        @($out | Where-Object { $_ -like '4|*' }) | Should -BeNullOrEmpty -Because 'other parameters ask EC2 again, which is gone'
    }
}

# Every PowerShell file in the repository must parse: a corrupt file can never land again.
BeforeDiscovery {
    $repoRoot = Split-Path -Parent $PSScriptRoot
    # Build output and tool folders are not sources; they are pruned, not walked.
    $pruned = 'out', 'target', 'bin', 'obj', '.git', 'node_modules', 'TestResults'
    $stack = [System.Collections.Generic.Stack[string]]::new()
    $stack.Push($repoRoot)
    $powershellFiles = while ($stack.Count) {
        $dir = $stack.Pop()
        foreach ($entry in Get-ChildItem -LiteralPath $dir -Force) {
            if ($entry.PSIsContainer) {
                if ($entry.Name -notin $pruned) { $stack.Push($entry.FullName) }
            }
            elseif ($entry.Extension -in '.ps1', '.psm1', '.psd1') {
                @{ Path = $entry.FullName; Name = [IO.Path]::GetRelativePath($repoRoot, $entry.FullName) }
            }
        }
    }
}

Describe 'PowerShell sources' {
    It 'include this file, the helpers, build.ps1 and the manifest' {
        $names = @($powershellFiles.Name -replace '\\', '/')
        foreach ($expected in 'build.ps1', 'module/SSMConnect.psd1', 'tests/TestHelpers.psm1', 'tests/Module.Tests.ps1') {
            $names | Should -Contain $expected
        }
    } -ForEach @{ powershellFiles = $powershellFiles }

    It '<Name> parses without errors' -ForEach $powershellFiles {
        $tokens = $null
        $errors = $null
        $null = [System.Management.Automation.Language.Parser]::ParseFile($Path, [ref]$tokens, [ref]$errors)
        @($errors | Select-Object -First 5 | ForEach-Object { "line $($_.Extent.StartLineNumber): $($_.Message)" }) |
            Should -BeNullOrEmpty -Because "$Name has $(@($errors).Count) parse errors"
    }
}

# Every example in the cmdlets' help, run as written in a child pwsh against a test world shaped
# like the examples: the emulator's inventory holds the instances and tags they name, its port map
# sends their remote ports to loopback servers (22 a private sshd, 5432 an echo server, 80 a web
# server), HOME holds the key files they name, the profile they name is in the shared files, and
# Get-EC2Instance is a stand-in that returns real Amazon.EC2.Model objects. The only edits are to
# things that are the user's own: user names, fixed local ports (free ones instead), a database
# host name (localhost), and psql (a stand-in that checks bytes come back).
BeforeDiscovery {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force -Global
    $helpFile = Join-Path (Split-Path -Parent $PSScriptRoot) 'module/en-US/SSMConnect.dll-Help.xml'
    [xml]$maml = Get-Content -LiteralPath $helpFile -Raw
    $ns = [System.Xml.XmlNamespaceManager]::new($maml.NameTable)
    $ns.AddNamespace('command', 'http://schemas.microsoft.com/maml/dev/command/2004/10')
    $ns.AddNamespace('dev', 'http://schemas.microsoft.com/maml/dev/2004/10')
    $helpExamples = foreach ($command in $maml.SelectNodes('//command:command', $ns)) {
        $name = $command.SelectSingleNode('command:details/command:name', $ns).InnerText.Trim()
        $i = 0
        foreach ($example in $command.SelectNodes('command:examples/command:example', $ns)) {
            $i++
            @{ Cmdlet = $name; Number = $i; Code = $example.SelectSingleNode('dev:code', $ns).InnerText }
        }
    }
    $haveSshd = Test-SshdAvailable
}

Describe 'Examples in the help' -Skip:$IsWindows {
    BeforeAll {
        $world = New-TestTempPath 'ssmc-examples'
        $home_ = Join-Path $world 'home'
        $bin = Join-Path $world 'bin'
        $work = Join-Path $world 'work'
        New-Item -ItemType Directory -Path (Join-Path $home_ '.ssh'), $bin, $work | Out-Null

        $echo = Start-EchoServer
        $web = [SSMConnectTests.HttpOkServer]::new()
        # 3389 (RDP) goes to the echo server too: the RDP examples' client stand-in checks bytes.
        $portMap = @{ '5432' = $echo.Port; '80' = $web.Port; '3389' = $echo.Port }
        # The key pair the Windows instances were launched with, as EC2 gives out its private half.
        $rdpKey = [System.Security.Cryptography.RSA]::Create(2048)
        Set-Content -LiteralPath (Join-Path $home_ '.ssh/build.pem') -Value $rdpKey.ExportRSAPrivateKeyPem() -NoNewline
        $windowsPassword = 'Ex4mple!' + [guid]::NewGuid().ToString('N').Substring(0, 8)
        $icKeys = Join-Path $world 'instance-connect-keys'
        if (Test-SshdAvailable) {
            # sshd takes the suite's client key and the keys EC2 Instance Connect pushes.
            $sshd = Start-TestSshd -ExtraAuthorizedKeysFile $icKeys
            $portMap['22'] = $sshd.Port
            foreach ($name in 'web.pem', 'key.pem') {
                Copy-Item $sshd.ClientKey (Join-Path $home_ ".ssh/$name")
            }
            # The SSH certificate the examples name, signed by a throwaway CA (sshd accepts the key anyway).
            & ssh-keygen -q -t ed25519 -N '' -f (Join-Path $world 'ca')
            Copy-Item "$($sshd.ClientKey).pub" (Join-Path $world 'key.pub')
            & ssh-keygen -q -s (Join-Path $world 'ca') -I examples -n ([Environment]::UserName) (Join-Path $world 'key.pub')
            Copy-Item (Join-Path $world 'key-cert.pub') (Join-Path $home_ '.ssh/key-cert.pub')
            # Not authorized by sshd until Instance Connect pushes its public half.
            & ssh-keygen -q -t ed25519 -N '' -f (Join-Path $home_ '.ssh/id_ed25519')
            & chmod 600 (Get-ChildItem (Join-Path $home_ '.ssh') -Exclude *.pub).FullName
            # The user's ssh, with the options a throwaway loopback sshd needs put first.
            $sshWrapper = Join-Path $bin 'ssh'
            "#!/bin/sh`nexec $((Get-Command ssh -CommandType Application)[0].Source) $((Get-TestSshArguments | Where-Object { $_ -ne '-n' }) -join ' ') `"`$@`"" |
                Set-Content -LiteralPath $sshWrapper
            & chmod 755 $sshWrapper
        }
        # The examples call pwsh by name.
        $pwshWrapper = Join-Path $bin 'pwsh'
        "#!/bin/sh`nexec $(Get-PwshCommandLine) `"`$@`"" | Set-Content -LiteralPath $pwshWrapper
        & chmod 755 $pwshWrapper
        # An RDP client stand-in (xfreerdp): connects to /v:HOST:PORT and checks that bytes come back.
        $rdpClient = Join-Path $world 'xfreerdp.ps1'
        @"
Import-Module '$((Join-Path $PSScriptRoot 'TestHelpers.psm1') -replace "'", "''")'
`$v = @(`$args | Where-Object { `$_ -like '/v:*' })[0].Substring(3)
`$port = [int](`$v -split ':')[-1]
`$data = [SSMConnectTests.Net]::RandomBytes(4096)
if ([SSMConnectTests.Net]::Sha256([SSMConnectTests.Net]::RoundTrip(`$port, `$data, 30)) -ne [SSMConnectTests.Net]::Sha256(`$data)) { 'xfreerdp stand-in: the bytes that came back differ'; exit 1 }
"xfreerdp stand-in: the RDP port `$port answered"
"@ | Set-Content -LiteralPath $rdpClient
        "#!/bin/sh`nexec $(Get-PwshCommandLine) -NoProfile -NonInteractive -File '$rdpClient' `"`$@`"" | Set-Content -LiteralPath (Join-Path $bin 'xfreerdp')
        & chmod 755 (Join-Path $bin 'xfreerdp')

        $emu = Start-Emulator -Config @{
            inventory       = @(
                # Also a Windows instance for the RDP examples (it has a password to give out).
                @{ instance_id = 'i-0123456789abcdef0'; tags = @{ Name = 'web'; Role = 'web' }; windows_password = $windowsPassword; key_pair_public_key = $rdpKey.ExportSubjectPublicKeyInfoPem() }
                @{ instance_id = 'i-0bbbbbbbbbbbbbbb1'; tags = @{ Name = 'bastion' } }
                @{ instance_id = 'i-0ccccccccccccccc2'; tags = @{ Name = 'build-win' }; windows_password = $windowsPassword; key_pair_public_key = $rdpKey.ExportSubjectPublicKeyInfoPem() }
            )
            port_map         = $portMap
            authorized_keys  = $icKeys
            # The account's own NonInteractiveCommands document with separate output streams.
            command_document = 'MyCommandDocument'
        }
        $files = New-TestAwsFiles
        $moduleRoot = Split-Path -Parent (Split-Path -Parent (Split-Path -Parent (Get-TestModuleManifest)))
        $environment = @{
            HOME                        = $home_
            PATH                        = $bin + [IO.Path]::PathSeparator + $env:PATH
            PSModulePath                = $moduleRoot + [IO.Path]::PathSeparator + $env:PSModulePath
            AWS_ENDPOINT_URL            = $emu.Endpoint
            AWS_REGION                  = $TestRegion
            AWS_ACCESS_KEY_ID           = $TestAccessKey
            AWS_SECRET_ACCESS_KEY       = $TestSecretKey
            AWS_SHARED_CREDENTIALS_FILE = $files.CredentialsFile
            AWS_CONFIG_FILE             = $files.ConfigFile
        }
        $user = [Environment]::UserName

        # Run before each example: the stand-ins, and two forwards for the Get/Stop examples.
        $helpers = Join-Path $PSScriptRoot 'TestHelpers.psm1'
        $prelude = @"
`$ErrorActionPreference = 'Stop'
`$PSStyle.OutputRendering = 'PlainText'
Import-Module '$($helpers -replace "'", "''")'
function Get-EC2Instance { param([string[]] `$InstanceId, [hashtable[]] `$Filter) Get-TestEC2Instance -Endpoint `$env:AWS_ENDPOINT_URL -InstanceId `$InstanceId -Filter `$Filter }
function psql { param([string] `$h, [int] `$p, [string] `$U)
    `$data = [SSMConnectTests.Net]::RandomBytes(65536)
    if ([SSMConnectTests.Net]::Sha256([SSMConnectTests.Net]::RoundTrip(`$p, `$data, 30)) -ne [SSMConnectTests.Net]::Sha256(`$data)) { throw 'psql stand-in: the bytes that came back differ' }
    "psql stand-in: 65536 bytes through `${h}:`$p came back intact"
}
"@
        $forwardsFirst = "`$fwd = Start-SSMPortForward i-0123456789abcdef0 5432; `$null = Start-SSMPortForward i-0123456789abcdef0 80`n"

        function ConvertTo-TestCode([string] $Code) {
            # The PS> lines are the code; the others are output shown in the help.
            $lines = @($Code -split '\r?\n' | Where-Object { $_ -match '^PS> ' } | ForEach-Object { $_.Substring(4) })
            $text = $lines -join "`n"
            $text = $text -replace '\b(ec2-user|ubuntu)\b', $user
            $text = $text -replace 'db\.cluster-abc\.eu-west-1\.rds\.amazonaws\.com', 'localhost'
            $fixed = [regex]::Matches($text, "(?<=-LocalPort (\d+,)*|-p )\d+|(?<=')\d+(?=:intranet:)") | ForEach-Object Value | Select-Object -Unique
            foreach ($port in $fixed) {
                $text = $text -replace "(?<=-LocalPort (\d+,)*|-p |')$port\b", (Get-FreePort)
            }
            # -PortMap's local ports (its keys) too.
            foreach ($port in [regex]::Matches($text, '(?<=[{;] )\d+(?= = \d+)') | ForEach-Object Value | Select-Object -Unique) {
                $text = $text -replace "(?<=[{;] )$port(?= = \d+)", (Get-FreePort)
            }
            $text
        }
    }

    AfterAll {
        Stop-Emulator $emu
        Stop-TestDaemon $sshd
        if ($echo) { $echo.Dispose() }
        if ($web) { $web.Dispose() }
        Remove-Item -LiteralPath $world, $files.Directory -Recurse -Force -ErrorAction SilentlyContinue
    }

    It '<Cmdlet> example <Number> runs' -ForEach $helpExamples {
        $needsSsh = $Cmdlet -eq 'Start-SSMSshSession'
        if ($needsSsh -and -not (Test-SshdAvailable)) {
            Set-ItResult -Skipped -Because 'no sshd and ssh client here'
            return
        }
        $expect = @()
        if ($Code -match '^\$ ') {
            # A POSIX shell line: run it in sh, in a folder holding the script it reads.
            Set-Content -LiteralPath (Join-Path $work 'setup.sh') -Value "echo from-setup-`$((6*7))`nexit 3"
            $line = ($Code -split '\r?\n' | Where-Object { $_ -match '^\$ ' } | Select-Object -First 1).Substring(2)
            $script = "Set-Location '$work'; & /bin/sh -c '$($line -replace "'", "''")'; if (`$LASTEXITCODE) { throw `"sh exited with `$LASTEXITCODE`" }"
            # The agent reports no exit code for shells: 10 (unknown), not the script's 3, printed
            # after the remote shell's last prompt when it left one.
            $expect = 'from-setup-42', '(?m)^(#\s*|\$\s*)?status: 10\s*$'
        }
        else {
            $script = ConvertTo-TestCode $Code
            if ($Cmdlet -in 'Get-SSMPortForward', 'Stop-SSMPortForward') { $script = $forwardsFirst + $script }
            if ($script -match '\bpsql\b') { $expect += 'came back intact' }
            if ($script -match 'Invoke-WebRequest') { $expect += 'StatusCode\s*:\s*200' }
            if ($script -match 'xfreerdp') { $expect += 'the RDP port \d+ answered' }
            if ($script -match 'GetNetworkCredential') { $expect += [regex]::Escape($windowsPassword) }
            # The web server behind port 80 answers "ok", through the SOCKS proxy too.
            if ($script -match '--socks5') { $expect += '(?m)^ok$' }
        }
        if ($script -match '-Wait\b') {
            # -Wait forwards until Ctrl+C: run it, use the forward, then interrupt it.
            $port = [regex]::Match($script, '(?<=-LocalPort )\d+').Value
            $file = Join-Path $work "wait-$Number.ps1"
            Set-Content -LiteralPath $file -Value ($prelude + "`n" + $script)
            $psi = New-PwshStartInfo -Redirect -ArgumentList '-NoProfile', '-NonInteractive', '-File', $file
            foreach ($name in $environment.Keys) { $psi.Environment[$name] = $environment[$name] }
            $p = [System.Diagnostics.Process]::Start($psi)
            try {
                $null = $p.StandardOutput.ReadToEndAsync()
                $stderr = $p.StandardError.ReadToEndAsync()
                Wait-Until { Test-PortListening $port } -TimeoutSeconds 60 | Should -BeTrue -Because 'the forward listens'
                $data = [SSMConnectTests.Net]::RandomBytes(100000)
                [SSMConnectTests.Net]::Sha256([SSMConnectTests.Net]::RoundTrip($port, $data, 60)) | Should -Be ([SSMConnectTests.Net]::Sha256($data))
                $p.HasExited | Should -BeFalse
                & kill -INT $p.Id
                $p.WaitForExit(20000) | Should -BeTrue -Because 'Ctrl+C ends -Wait'
                Wait-PortClosed $port | Should -BeTrue
                $stderr.Result | Should -Not -Match 'Exception'
            }
            finally {
                Stop-TestProcess $p
            }
            return
        }

        $child = Invoke-ChildPwsh -Environment $environment -TimeoutSeconds 120 -ScriptBlock ([scriptblock]::Create(
                $prelude + "`ntry {`n" + $script + "`n} catch { 'EXAMPLE FAILED: ' + `$_; exit 9 }`nGet-SSMPortForward | Stop-SSMPortForward`nexit 0"))
        $all = ($child.Output -join "`n")
        $child.ExitCode | Should -Be 0 -Because "$script`n---`n$all`n$($child.Errors)"
        foreach ($pattern in $expect) { $all | Should -Match $pattern }
    }
}

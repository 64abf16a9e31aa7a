# Start-SSMShellSession: an interactive shell in a real terminal (tmux), the non-interactive mode
# with stdin redirected, -WhatIf and errors. The emulator runs sh in a pty and, like the agent,
# reports no exit code for it ($LASTEXITCODE 10) unless told to invent one.

BeforeDiscovery {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force -Global
    $haveTmux = -not $IsWindows -and [bool](Get-Command tmux -ErrorAction SilentlyContinue)
    $unix = -not $IsWindows
}

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force -Global
    Import-TestModule
    $instance = 'i-0123456789abcdef0'
    $emu = Start-Emulator -Config @{ inventory = @(@{ instance_id = $instance; tags = @{ Name = 'demo' } }) }
    $aws = $emu.AwsParameters
    $manifest = Get-TestModuleManifest
    $pwsh = Get-PwshCommandLine
    # The command line a child pwsh runs to open the shell.
    function Get-ShellCommand($Emulator, $Keys = $aws) {
        "Import-Module '$($manifest -replace "'", "''")'; " +
        "Start-SSMShellSession -Target $instance -EndpointUrl '$($Emulator.Endpoint)' -Region $($aws.Region) " +
        "-AccessKey $($Keys.AccessKey) -SecretKey '$($Keys.SecretKey)'"
    }
    $shellCommand = Get-ShellCommand $emu
    # Sends EXIT_CODE at the end of shells, which the agent never does: for the plumbing.
    $inventing = Start-Emulator -Config @{ invent_shell_exit_code = $true }
}

AfterAll {
    Stop-Emulator $emu
    Stop-Emulator $inventing
}

Describe 'Start-SSMShellSession' {
    It 'starts nothing with -WhatIf' {
        $before = @(Get-EmulatorSession $emu).Count
        $global:LASTEXITCODE = 42
        Start-SSMShellSession -Target $instance -WhatIf @aws | Should -BeNullOrEmpty
        $LASTEXITCODE | Should -Be 42
        @(Get-EmulatorSession $emu).Count | Should -Be $before
    }

    It 'reports a refused target as an error with a stable id' {
        $refusing = Start-Emulator -Config @{ targets = @('i-0aaaaaaaaaaaaaaa1') }
        $refusingAws = $refusing.AwsParameters
        try {
            { Start-SSMShellSession -Target i-0bbbbbbbbbbbbbbb2 @refusingAws -ErrorAction Stop } |
                Should -Throw -ErrorId 'SSMConnect.TargetNotConnected,*'
        }
        finally {
            Stop-Emulator $refusing
        }
    }

    It 'streams redirected stdin to the remote shell; no exit code comes back, so $LASTEXITCODE is 10 and -PassThru writes $null' -Skip:(-not $unix) {
        $command = "`$r = `$($shellCommand -PassThru); 'passthru-null=' + (`$null -eq `$r) + '; exit-code=' + `$LASTEXITCODE"
        $psi = New-PwshStartInfo -Redirect -ArgumentList '-NoProfile', '-NonInteractive', '-Command', $command
        $p = [System.Diagnostics.Process]::Start($psi)
        $stderr = $p.StandardError.ReadToEndAsync()
        $p.StandardInput.WriteLine('echo streamed-$((6*7))')
        $p.StandardInput.WriteLine('exit 4')
        $p.StandardInput.Close()
        $stdout = $p.StandardOutput.ReadToEndAsync()
        $exited = $p.WaitForExit(60000)
        $code = if ($exited) { $p.ExitCode }
        Stop-TestProcess $p
        $exited | Should -BeTrue
        $code | Should -Be 0 -Because $stderr.Result
        $stdout.Result | Should -Match 'streamed-42'
        $stdout.Result | Should -Match 'passthru-null=True; exit-code=10'
    }

    It 'gives -Reason to StartSession' -Skip:(-not $unix) {
        $before = @(Get-EmulatorSession $emu).session_id
        $child = Invoke-ChildPwsh -InputText "exit`n" -ArgumentList @((Get-TestModuleManifest), $emu.Endpoint, $instance) -ScriptBlock {
            param($Manifest, $Endpoint, $Instance)
            Import-Module $Manifest -ErrorAction Stop
            Start-SSMShellSession -Target $Instance -Reason 'INC-42 disk full' -EndpointUrl $Endpoint -Region us-east-1 -AccessKey AKIDEXAMPLE -SecretKey secret
        }
        $child.ExitCode | Should -Be 0 -Because $child.Errors
        $session = @(Get-EmulatorSession $emu | Where-Object session_id -NotIn $before)
        $session | Should -HaveCount 1
        $session[0].reason | Should -Be 'INC-42 disk full'
    }

    It 'returns an exit code the agent reports, in $LASTEXITCODE and with -PassThru' -Skip:(-not $unix) {
        $psi = New-PwshStartInfo -Redirect -ArgumentList '-NoProfile', '-NonInteractive', '-Command', "$(Get-ShellCommand $inventing) -PassThru; 'exit-code=' + `$LASTEXITCODE"
        $p = [System.Diagnostics.Process]::Start($psi)
        $stderr = $p.StandardError.ReadToEndAsync()
        $p.StandardInput.WriteLine('exit 4')
        $p.StandardInput.Close()
        $stdout = $p.StandardOutput.ReadToEndAsync()
        $exited = $p.WaitForExit(60000)
        $code = if ($exited) { $p.ExitCode }
        Stop-TestProcess $p
        $exited | Should -BeTrue
        $code | Should -Be 0 -Because $stderr.Result
        $stdout.Result | Should -Match 'exit-code=4'
        # -PassThru writes the exit code (after the remote shell's last prompt, when it left one).
        $stdout.Result | Should -Match '(?m)^(#\s*|\$\s*)?4\s*$'
    }

    It 'takes Amazon.EC2.Model Reservation and Instance objects from the AWS SDK' -Skip:(-not $unix) {
        $before = @(Get-EmulatorSession $emu).session_id
        $child = Invoke-ChildPwsh -InputText "echo piped-`$((6*7))`nexit 3`n" -ArgumentList @(
            (Get-TestModuleManifest), (Join-Path $PSScriptRoot 'TestHelpers.psm1'), $emu.Endpoint
        ) -ScriptBlock {
            param($Manifest, $Helpers, $Endpoint)
            Import-Module $Helpers
            Import-Module $Manifest -ErrorAction Stop
            $aws = @{ EndpointUrl = $Endpoint; Region = 'us-east-1'; AccessKey = 'AKIDEXAMPLE'; SecretKey = 'secret' }
            $reservations = @(Get-TestEC2Instance -Endpoint $Endpoint -Filter @{ Name = 'tag:Name'; Values = 'demo' })
            "types=$($reservations[0].GetType().FullName),$($reservations[0].Instances[0].GetType().FullName)"
            # The first session reads stdin to its end; the second finds it at end of file.
            # No exit code comes from a shell: -PassThru writes $null and $LASTEXITCODE is 10.
            $first = $reservations | Start-SSMShellSession -PassThru @aws
            "first=$($null -eq $first),$LASTEXITCODE"
            $global:LASTEXITCODE = 0
            $second = $reservations | Select-Object -ExpandProperty Instances | Start-SSMShellSession -PassThru @aws
            "second=$($null -eq $second),$LASTEXITCODE"
        }
        $child.ExitCode | Should -Be 0 -Because $child.Errors
        $child.Output | Should -Contain 'types=Amazon.EC2.Model.Reservation,Amazon.EC2.Model.Instance'
        # The remote shell's last prompt may stand before the next line of output.
        $all = $child.Output -join "`n"
        $all | Should -Match 'piped-42'
        $all | Should -Match '(?m)^(#\s*|\$\s*)?first=True,10$'
        $all | Should -Match '(?m)^(#\s*|\$\s*)?second=True,10$'
        $sessions = @(Get-EmulatorSession $emu | Where-Object session_id -NotIn $before)
        $sessions | Should -HaveCount 2
        $sessions.target | Should -Be @($instance, $instance)
    }

    Context 'in a terminal' -Skip:(-not $haveTmux) {
        BeforeAll {
            $session = "ssmc-$([guid]::NewGuid().ToString('N').Substring(0, 8))"
            function Get-Screen { (& tmux capture-pane -p -t $session -S -200) -join "`n" }
            function Send-Line([string] $Text) { & tmux send-keys -t $session -l $Text; & tmux send-keys -t $session Enter }
            function Wait-Screen([string] $Pattern, [int] $TimeoutSeconds = 30) {
                Wait-Until { (Get-Screen) -match $Pattern } -TimeoutSeconds $TimeoutSeconds
            }
            # Fails with the screen as it is when the pattern does not show within the time.
            function Assert-Screen([string] $Pattern) {
                if (-not (Wait-Screen $Pattern)) { throw "the screen did not show $Pattern within 30 s:`n$(Get-Screen)" }
            }
            # Keys typed before the session has ended still go to the remote shell (as with ssh),
            # so the next line waits for the PowerShell prompt to come back.
            $psPrompt = '(?m)^PS [^\n]*>\s*$'
            & tmux new-session -d -s $session -x 160 -y 50 "$pwsh -NoProfile -NoLogo"
            Wait-Screen 'PS .*>' | Should -BeTrue
        }

        AfterAll {
            & tmux kill-session -t $session 2>$null
        }

        BeforeEach {
            # A clean screen, so that each test waits for its own output: once Clear-Host has run
            # the pane shows nothing but the prompt (the old screen would match a prompt at once),
            # and only then is the scrollback dropped, so that the next keys go to a waiting prompt.
            Send-Line 'Clear-Host'
            if (-not (Wait-Until { ((& tmux capture-pane -p -t $session) -join "`n") -match '\A\s*PS [^\n]*>\s*\z' } -TimeoutSeconds 30)) {
                throw "Clear-Host left more than the prompt within 30 s:`n$(Get-Screen)"
            }
            & tmux clear-history -t $session
        }

        It 'runs a command in the remote shell, ends with $LASTEXITCODE 10 (no exit code) and gives the terminal back' {
            Send-Line $shellCommand
            # The remote sh prints a prompt ($ or #) once the session runs.
            Assert-Screen '(?m)^\s*[$#]\s*$'
            Send-Line 'echo remote-$((6*7))'
            Assert-Screen 'remote-42'
            Send-Line 'exit 5'
            Assert-Screen $psPrompt
            # Back at the PowerShell prompt, which reads and echoes input again.
            Send-Line '"code=$LASTEXITCODE; back=" + (6*7)'
            # The agent reports no exit code for shells: 10, not the 5 the remote shell exited with.
            Assert-Screen 'code=10; back=42'
        }

        It 'sees the terminal size on the remote side' {
            Send-Line $shellCommand
            Assert-Screen '(?m)^\s*[$#]\s*$'
            Send-Line 'echo size-$(stty size | tr " " x)'
            # 160 columns; the rows are the window's less tmux's status line.
            Assert-Screen 'size-\d+x160'
            Send-Line 'exit 0'
            Assert-Screen $psPrompt
            Send-Line '"after=" + (7*6)'
            Assert-Screen 'after=42'
        }
    }
}

Describe 'Start-SSMShellSession with KMS encryption' -Skip:(-not $unix) {
    BeforeAll {
        # An account whose Session Manager preferences encrypt sessions with a key in KMS (moto),
        # the emulated agent decrypting the data keys there as the agent does.
        $moto = Start-TestMoto
        $key = New-TestKmsKey $moto
        function Start-KmsEmulator([string] $KeyId, [hashtable] $Faults = @{}) {
            Start-Emulator -Config @{ kms_key_id = $KeyId; kms_endpoint = $moto.Endpoint; faults = $Faults }
        }
        $encrypting = Start-KmsEmulator $key
        $tampering = Start-KmsEmulator $key @{ tamper_encrypted_output = 1 }
        $wrongChallenge = Start-KmsEmulator $key @{ wrong_challenge_key = $true }
        $missingKey = Start-KmsEmulator 'arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000'
        # A child pwsh that opens the shell with stdin redirected, reaching KMS at moto.
        function Start-KmsShell($Emulator, [string] $After = '', $Kms = $moto, $Keys = $aws) {
            $command = "`$env:AWS_ENDPOINT_URL_KMS = '$($Kms.Endpoint)'; " +
                "try { $(Get-ShellCommand $Emulator $Keys) -ErrorAction Stop; 'exit-code=' + `$LASTEXITCODE } " +
                "catch { 'error-id=' + `$_.FullyQualifiedErrorId; 'message=' + `$_.Exception.Message }"
            $child = Invoke-ChildPwsh -ScriptBlock ([scriptblock]::Create($command)) -InputText "$After`nexit`n" -TimeoutSeconds 90
            [pscustomobject]@{ Stdout = $child.Output -join "`n"; Stderr = $child.Errors }
        }
    }

    AfterAll {
        $encrypting, $tampering, $wrongChallenge, $missingKey | Stop-Emulator
        Stop-TestDaemon $moto
    }

    It 'runs an encrypted shell: the agent says so, the command runs, and the session was encrypted' {
        $run = Start-KmsShell $encrypting 'echo kms-$((6*7))'
        $run.Stdout | Should -Match 'kms-42' -Because $run.Stderr
        $run.Stdout | Should -Match 'exit-code=10'
        $run.Stderr | Should -Match 'This session is encrypted using AWS KMS\.'
        (Get-EmulatorSession $encrypting | Select-Object -Last 1).encrypted | Should -BeTrue
    }

    It 'ends the session on a tampered message with SSMConnect.KmsTampered, writing none of it' {
        $run = Start-KmsShell $tampering 'echo secret-$((6*7))'
        $run.Stdout | Should -Match 'error-id=SSMConnect\.KmsTampered,' -Because $run.Stderr
        $run.Stdout | Should -Not -Match 'secret-42'
    }

    It 'refuses a challenge sealed under another key with SSMConnect.KmsChallengeFailed' {
        $run = Start-KmsShell $wrongChallenge
        $run.Stdout | Should -Match 'error-id=SSMConnect\.KmsChallengeFailed,' -Because $run.Stderr
    }

    It 'names a key KMS does not have, with SSMConnect.KmsKeyUnavailable' {
        $run = Start-KmsShell $missingKey
        $run.Stdout | Should -Match 'error-id=SSMConnect\.KmsKeyUnavailable,' -Because $run.Stderr
        $run.Stdout | Should -Match 'NotFoundException'
    }

    It 'says credentials without kms:GenerateDataKey on the key are refused, with SSMConnect.KmsAccessDenied' {
        # A moto checking IAM as AWS does; the user may use the key but not make data keys.
        $enforcing = Start-TestMoto -FreeRequests 4
        $refusing = $null
        try {
            $enforcedKey = New-TestKmsKey $enforcing
            $operator = New-TestIamUser $enforcing -Name operator -Policy @{
                Version   = '2012-10-17'
                Statement = @(@{ Effect = 'Allow'; Action = @('kms:Decrypt', 'kms:DescribeKey'); Resource = '*' })
            }
            $refusing = Start-Emulator -Config @{ kms_key_id = $enforcedKey; kms_endpoint = $enforcing.Endpoint }
            $run = Start-KmsShell $refusing -Kms $enforcing -Keys $operator
            $run.Stdout | Should -Match 'error-id=SSMConnect\.KmsAccessDenied,' -Because $run.Stderr
            $run.Stdout | Should -Match ([regex]::Escape($enforcedKey))
            $run.Stdout | Should -Match 'kms:GenerateDataKey'
            $run.Stdout | Should -Not -Match ([regex]::Escape($operator.SecretKey))
        }
        finally {
            if ($refusing) { Stop-Emulator $refusing }
            Stop-TestDaemon $enforcing
        }
    }
}

Describe 'Start-SSMShellSession first-run errors' -Skip:(-not $unix) {
    BeforeAll {
        $instance = 'i-0123456789abcdef0'
        $emu = Start-Emulator
        $aws = $emu.AwsParameters
        $manifest = Get-TestModuleManifest
        # A child pwsh as on a new machine: no AWS variables, a HOME of its own (no ~/.aws), no
        # instance role (IMDS off). Returns its error id and message.
        function Invoke-FirstRun([string] $Arguments) {
            $dir = New-TestTempPath -Prefix 'ssmconnect-firstrun'
            $null = New-Item -ItemType Directory -Path $dir
            try {
                $command = "Import-Module '$($manifest -replace "'", "''")'; " +
                    "try { Start-SSMShellSession $Arguments -ErrorAction Stop } " +
                    "catch { 'error-id=' + `$_.FullyQualifiedErrorId; 'message=' + `$_.Exception.Message }"
                $child = Invoke-ChildPwsh -ScriptBlock ([scriptblock]::Create($command)) -RemoveEnvironment 'AWS_*' -TimeoutSeconds 60 -Environment @{
                    HOME                      = $dir
                    AWS_EC2_METADATA_DISABLED = 'true'
                }
                [pscustomobject]@{ Stdout = $child.Output -join "`n"; Stderr = $child.Errors }
            }
            finally {
                Remove-Item -Recurse -Force $dir -ErrorAction SilentlyContinue
            }
        }
    }

    AfterAll {
        Stop-Emulator $emu
    }

    It 'says where it looked for credentials and how to fix it, with SSMConnect.NoCredentials' {
        $run = Invoke-FirstRun "-Target $instance -EndpointUrl '$($emu.Endpoint)' -Region $($aws.Region)"
        $run.Stdout | Should -Match 'error-id=SSMConnect\.NoCredentials,' -Because $run.Stderr
        $run.Stdout | Should -Match 'no AWS credentials found'
        $run.Stdout | Should -Match 'AWS_ACCESS_KEY_ID'
        $run.Stdout | Should -Match 'Set-AWSCredential'
        @(Get-EmulatorSession $emu).Count | Should -Be 0
    }

    It 'names an endpoint that refuses connections, with SSMConnect.EndpointUnreachable' {
        $closed = Get-FreePort
        { Start-SSMShellSession -Target $instance -EndpointUrl "http://127.0.0.1:$closed" -Region $aws.Region -AccessKey $aws.AccessKey -SecretKey $aws.SecretKey -ErrorAction Stop } |
            Should -Throw -ErrorId 'SSMConnect.EndpointUnreachable,*' -ExpectedMessage '*cannot reach the AWS endpoint*'
    }
}

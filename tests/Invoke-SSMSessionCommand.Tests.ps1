# Invoke-SSMSessionCommand against the emulator's NonInteractiveCommands agent: it runs the
# command for real on this machine (split shell-style, no shell), with AWS-StartNonInteractiveCommand
# (combined output after the end, no exit code) or the account document with separate output
# streams that the emulator is configured with (stdout and stderr apart, the exit code).

BeforeDiscovery {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force -Global
    $unix = -not $IsWindows
}

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force -Global
    Import-TestModule
    $instances = 'i-0123456789abcdef0', 'i-0aaaaaaaaaaaaaaa1', 'i-0bbbbbbbbbbbbbbb2'
    $document = 'SSMConnectTestCommands'
    $emu = Start-Emulator -Config @{
        inventory        = @(
            @{ instance_id = $instances[0]; tags = @{ Name = 'demo'; Role = 'web' } }
            @{ instance_id = $instances[1]; tags = @{ Role = 'web' } }
            @{ instance_id = $instances[2]; tags = @{ Role = 'web' } }
        )
        command_document = $document
    }
    $aws = $emu.AwsParameters
    # Tags are resolved with DescribeInstances at the emulator.
    $savedEc2 = $env:AWS_ENDPOINT_URL_EC2
    $env:AWS_ENDPOINT_URL_EC2 = $emu.Endpoint
    $scratch = New-TestTempPath 'ssmc-invoke'
    New-Item -ItemType Directory -Path $scratch | Out-Null
    $script = "sh -c 'echo out-1; echo err-1 >&2; echo out-2; exit 3'"
}

AfterAll {
    $env:AWS_ENDPOINT_URL_EC2 = $savedEc2
    Stop-Emulator $emu
    Remove-Item -LiteralPath $scratch -Recurse -Force -ErrorAction SilentlyContinue
}

Describe 'Invoke-SSMSessionCommand' -Skip:(-not $unix) {
    It 'writes stdout lines tagged with the instance, stderr to the error stream and the exit code, with separate output streams' {
        $global:LASTEXITCODE = 0
        $before = @(Get-EmulatorSession $emu).session_id
        $out = @(Invoke-SSMSessionCommand -Target $instances[0] -Command $script -DocumentName $document @aws -ErrorVariable err -ErrorAction SilentlyContinue)
        $LASTEXITCODE | Should -Be 3
        @($out | ForEach-Object { "$_" }) | Should -Be @('out-1', 'out-2')
        $out[0] | Should -BeOfType ([string])
        $out[0].InstanceId | Should -Be $instances[0]
        $out[0].Target | Should -Be $instances[0]
        $err | Should -HaveCount 1
        $err[0].FullyQualifiedErrorId | Should -BeLike 'SSMConnect.RemoteStderr,*'
        $err[0].Exception.Message | Should -Be 'err-1'
        $err[0].TargetObject | Should -Be $instances[0]
        $session = Get-EmulatorSession $emu | Where-Object session_id -NotIn $before
        $session.document | Should -Be $document
        Wait-Until { (Get-EmulatorSession $emu | Where-Object session_id -EQ $session.session_id).ended } | Should -BeTrue
    }

    It 'writes a result per target with -PassThru' {
        $out = @(Invoke-SSMSessionCommand -Target $instances[0] -Command $script -DocumentName $document -PassThru @aws -ErrorAction SilentlyContinue)
        $result = @($out | Where-Object { $_ -is [SSMConnect.CommandResult] })
        $result | Should -HaveCount 1
        $result[0].Status | Should -Be 'Completed'
        $result[0].ExitCode | Should -Be 3
        $result[0].InstanceId | Should -Be $instances[0]
        $result[0].Target | Should -Be $instances[0]
        $result[0].EndTime | Should -BeGreaterOrEqual $result[0].StartTime
        # The result comes after the target's output.
        $out[-1] | Should -Be $result[0]
    }

    It 'uses AWS-StartNonInteractiveCommand by default: combined output, no exit code, $LASTEXITCODE 10' {
        $global:LASTEXITCODE = 0
        $before = @(Get-EmulatorSession $emu).session_id
        $out = @(Invoke-SSMSessionCommand -Target $instances[0] -Command $script -PassThru @aws -ErrorVariable err)
        $err | Should -BeNullOrEmpty
        $lines = @($out | Where-Object { $_ -is [string] } | ForEach-Object { "$_" })
        $lines | Should -Contain 'out-1'
        $lines | Should -Contain 'err-1'
        $lines | Should -Contain 'out-2'
        $result = $out | Where-Object { $_ -is [SSMConnect.CommandResult] }
        $result.Status | Should -Be 'NoExitCode'
        $result.ExitCode | Should -BeNullOrEmpty
        $LASTEXITCODE | Should -Be 10
        (Get-EmulatorSession $emu | Where-Object session_id -NotIn $before).document | Should -Be 'AWS-StartNonInteractiveCommand'
    }

    It 'tags the output of a tag target with the instance it resolved to' {
        $out = @(Invoke-SSMSessionCommand -Target Name:demo -Command 'echo tagged' @aws)
        "$($out[0])" | Should -Be 'tagged'
        $out[0].InstanceId | Should -Be $instances[0]
        $out[0].Target | Should -Be 'Name:demo'
    }

    It 'writes the bytes as they came with -Raw' {
        # printf turns the octal escape into the byte 0xFF, which is no UTF-8.
        $bytes = Invoke-SSMSessionCommand -Target $instances[0] -Command "printf '\377abc\n'" -Raw @aws
        $bytes | Should -BeOfType ([byte])
        , $bytes | Should -BeOfType ([byte[]])
        [byte[]]$bytes | Should -Be ([byte[]](0xFF, 0x61, 0x62, 0x63, 0x0A))
        $bytes.InstanceId | Should -Be $instances[0]
    }

    It 'runs piped targets concurrently, as many at once as -ThrottleLimit allows' {
        # Each command appends a line to a file and waits (2 s at most) until three are there:
        # the count it then sees is how many were running at the same time.
        $together = Join-Path $scratch 'together'
        $wait = "sh -c 'echo x >> $together; i=0; while [ `$(wc -l < $together) -lt 3 ] && [ `$i -lt 20 ]; do sleep 0.1; i=`$((i+1)); done; echo seen=`$(wc -l < $together)'"
        $out = @($instances | Invoke-SSMSessionCommand -Command $wait -DocumentName $document -ThrottleLimit 3 @aws)
        $out | Should -HaveCount 3
        @($out | ForEach-Object { "$_" } | Sort-Object -Unique) | Should -Be 'seen=3'
        @($out.InstanceId | Sort-Object) | Should -Be @($instances | Sort-Object)

        $oneByOne = Join-Path $scratch 'one-by-one'
        $out = @($instances | Invoke-SSMSessionCommand -Command ($wait -replace [regex]::Escape($together), $oneByOne) -DocumentName $document -ThrottleLimit 1 @aws)
        @($out | ForEach-Object { "$_" } | Sort-Object) | Should -Be @('seen=1', 'seen=2', 'seen=3')
    }

    It 'takes Amazon.EC2.Model reservations from the AWS SDK, one session per instance' {
        $reservations = @(Get-TestEC2Instance -Endpoint $emu.Endpoint -Filter @{ Name = 'tag:Role'; Values = 'web' })
        $reservations[0] | Should -BeOfType ([Amazon.EC2.Model.Reservation])
        $out = @($reservations | Invoke-SSMSessionCommand -Command 'echo from-sdk' @aws)
        @($out.InstanceId | Sort-Object) | Should -Be @($instances | Sort-Object)
    }

    It 'reports a target that fails with its stable id and runs the others' {
        $refusing = Start-Emulator -Config @{ targets = @($instances[0]); command_document = $document }
        try {
            $refusingAws = $refusing.AwsParameters
            $out = @(Invoke-SSMSessionCommand -Target $instances[0], 'i-0dddddddddddddddd' -Command 'echo still-ran' -PassThru @refusingAws -ErrorVariable err -ErrorAction SilentlyContinue)
            "$($out | Where-Object { $_ -is [string] })" | Should -Be 'still-ran'
            $err | Should -HaveCount 1
            $err[0].FullyQualifiedErrorId | Should -BeLike 'SSMConnect.TargetNotConnected,*'
            $err[0].TargetObject | Should -Be 'i-0dddddddddddddddd'
            $failed = $out | Where-Object { $_ -is [SSMConnect.CommandResult] -and $_.Status -eq 'Failed' }
            $failed.Target | Should -Be 'i-0dddddddddddddddd'
            $failed.Error.ErrorId | Should -Be 'SSMConnect.TargetNotConnected'
        }
        finally {
            Stop-Emulator $refusing
        }
    }

    It 'refuses a document that does not exist' {
        { Invoke-SSMSessionCommand -Target $instances[0] -Command 'true' -DocumentName NoSuchDocument @aws -ErrorAction Stop } |
            Should -Throw -ErrorId 'SSMConnect.ApiError,*'
    }

    It 'starts nothing with -WhatIf' {
        $before = @(Get-EmulatorSession $emu).Count
        Invoke-SSMSessionCommand -Target $instances -Command 'true' -WhatIf @aws | Should -BeNullOrEmpty
        @(Get-EmulatorSession $emu).Count | Should -Be $before
    }

    It 'passes Ctrl+C to the remote command, then stops' {
        $mark = Join-Path $scratch 'interrupted'
        $trap = "sh -c 'trap `"echo interrupted > $mark; kill \`$pid; exit 7`" INT; sleep 60 & pid=`$!; echo ready; wait'"
        $command = "Import-Module '$((Get-TestModuleManifest) -replace "'", "''")'; " +
            "Invoke-SSMSessionCommand -Target $($instances[0]) -Command '$($trap -replace "'", "''")' -DocumentName $document " +
            "-EndpointUrl '$($emu.Endpoint)' -Region $($aws.Region) -AccessKey $($aws.AccessKey) -SecretKey '$($aws.SecretKey)' | " +
            # Each line straight to stdout, so that the test sees it as it comes.
            'ForEach-Object { [Console]::Out.WriteLine("$_"); [Console]::Out.Flush() }; ''after'''
        $before = @(Get-EmulatorSession $emu).session_id
        $psi = New-PwshStartInfo -Redirect -ArgumentList '-NoProfile', '-NonInteractive', '-Command', $command
        $p = [System.Diagnostics.Process]::Start($psi)
        try {
            $p.StandardInput.Close()
            $stderr = $p.StandardError.ReadToEndAsync()
            # A blocking read: the child writes the line within a second or two, or ends.
            $p.StandardOutput.ReadLine() | Should -Be 'ready' -Because 'the command says it is ready'
            $p.HasExited | Should -BeFalse
            & kill -INT $p.Id
            $p.WaitForExit(20000) | Should -BeTrue -Because "Ctrl+C ends the command $($stderr.Result)"
            $rest = $p.StandardOutput.ReadToEnd()
        }
        finally {
            Stop-TestProcess $p
        }
        $rest | Should -Not -Match 'after' -Because 'Ctrl+C stops the pipeline'
        Wait-Until { Test-Path $mark } | Should -BeTrue -Because 'the remote command got SIGINT'
        Get-Content $mark | Should -Be 'interrupted'
        $session = Get-EmulatorSession $emu | Where-Object session_id -NotIn $before
        Wait-Until { (Get-EmulatorSession $emu | Where-Object session_id -EQ $session.session_id).ended } | Should -BeTrue
    }
}

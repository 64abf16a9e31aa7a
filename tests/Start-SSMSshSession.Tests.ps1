# Start-SSMSshSession: the system ssh through the bundled helper, to a private sshd on loopback
# behind the emulator (its port 22 is mapped to the sshd).

BeforeDiscovery {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force -Global
    $haveSshd = Test-SshdAvailable
}

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force -Global
    Import-TestModule
    $instance = 'i-0123456789abcdef0'
    $user = [Environment]::UserName
    $sshArgs = Get-TestSshArguments
    if (Test-SshdAvailable) {
        $sshd = Start-TestSshd
        $emu = Start-Emulator -ArgumentList '--port-map', "22=$($sshd.Port)" -Config @{
            inventory = @(@{ instance_id = $instance }, @{ instance_id = 'i-0fedcba9876543210' })
        }
        $aws = $emu.AwsParameters
    }
}

AfterAll {
    Stop-Emulator $emu
    Stop-TestDaemon $sshd
}

Describe 'Start-SSMSshSession' -Skip:(-not $haveSshd) {
    It 'runs -Command and returns the remote exit code as output and in $LASTEXITCODE' {
        $global:LASTEXITCODE = 0
        $code = Start-SSMSshSession -Target $instance -User $user -IdentityFile $sshd.ClientKey -Command 'exit 7' -SshArgument $sshArgs -PassThru @aws
        $code | Should -Be 7
        $LASTEXITCODE | Should -Be 7
    }

    It 'captures -Command output with -CaptureOutput: stdout as lines, stderr as errors, the exit code' {
        $global:LASTEXITCODE = 0
        $command = 'echo first-$((40+2)); echo "second line"; echo oops >&2; exit 6'
        $out = @(Start-SSMSshSession -Target $instance -User $user -IdentityFile $sshd.ClientKey -Command $command -CaptureOutput -SshArgument ($sshArgs + '-o', 'LogLevel=ERROR') @aws -ErrorVariable err -ErrorAction SilentlyContinue)
        @($out | ForEach-Object { "$_" }) | Should -Be @('first-42', 'second line')
        $out[0].Target | Should -Be $instance
        $LASTEXITCODE | Should -Be 6
        @($err | Where-Object FullyQualifiedErrorId -Like 'SSMConnect.RemoteStderr,*' | ForEach-Object { $_.Exception.Message }) | Should -Be @('oops')
    }

    It 'refuses -CaptureOutput without -Command' {
        { Start-SSMSshSession -Target $instance -User $user -IdentityFile $sshd.ClientKey -CaptureOutput @aws -ErrorAction Stop } |
            Should -Throw -ErrorId 'SSMConnect.InvalidArgument,*'
    }

    It 'sets $LASTEXITCODE without output unless -PassThru' {
        $out = Start-SSMSshSession -Target $instance -User $user -IdentityFile $sshd.ClientKey -Command 'exit 3' -SshArgument $sshArgs @aws
        $out | Should -BeNullOrEmpty
        $LASTEXITCODE | Should -Be 3
    }

    It 'takes the target from objects with InstanceId and from reservations' {
        $codes = @(
            [pscustomobject]@{ InstanceId = $instance } |
                Start-SSMSshSession -User $user -IdentityFile $sshd.ClientKey -Command 'exit 4' -SshArgument $sshArgs -PassThru @aws
            [pscustomobject]@{ Instances = @([pscustomobject]@{ InstanceId = $instance }, [pscustomobject]@{ InstanceId = 'i-0fedcba9876543210' }) } |
                Start-SSMSshSession -User $user -IdentityFile $sshd.ClientKey -Command 'exit 5' -SshArgument $sshArgs -PassThru @aws
        )
        $codes | Should -Be @(4, 5, 5)
    }

    It 'takes Amazon.EC2.Model Reservation and Instance objects from the AWS SDK' {
        $reservations = @(Get-TestEC2Instance -Endpoint $emu.Endpoint -InstanceId $instance)
        $reservations[0] | Should -BeOfType ([Amazon.EC2.Model.Reservation])
        $codes = @(
            $reservations | Start-SSMSshSession -User $user -IdentityFile $sshd.ClientKey -Command 'exit 4' -SshArgument $sshArgs -PassThru @aws
            $reservations | Select-Object -ExpandProperty Instances |
                Start-SSMSshSession -User $user -IdentityFile $sshd.ClientKey -Command 'exit 5' -SshArgument $sshArgs -PassThru @aws
        )
        $codes | Should -Be @(4, 5)
    }

    It 'finds the helper in the module layout and passes no credentials on the command line' {
        $verbose = Start-SSMSshSession -Target $instance -User $user -IdentityFile $sshd.ClientKey -Command 'exit 0' -SshArgument $sshArgs @aws -Verbose 4>&1 |
            Where-Object { $_ -is [System.Management.Automation.VerboseRecord] } | Out-String
        $verbose | Should -Match 'ProxyCommand='
        $verbose | Should -Match ([regex]::Escape([IO.Path]::Combine('bin', 'runtimes')))
        $verbose | Should -Not -Match ([regex]::Escape($aws.SecretKey))
    }

    It 'starts nothing with -WhatIf' {
        $before = @(Get-EmulatorSession $emu).Count
        $global:LASTEXITCODE = 42
        Start-SSMSshSession -Target $instance -User $user -IdentityFile $sshd.ClientKey -Command 'exit 9' -SshArgument $sshArgs -PassThru -WhatIf @aws |
            Should -BeNullOrEmpty
        $LASTEXITCODE | Should -Be 42
        @(Get-EmulatorSession $emu).Count | Should -Be $before
    }

    It 'refuses -UseInstanceConnect without -User' {
        { Start-SSMSshSession -Target $instance -IdentityFile $sshd.ClientKey -UseInstanceConnect @aws -ErrorAction Stop } |
            Should -Throw -ErrorId 'SSMConnect.InvalidArgument,*'
    }

    It 'takes -SshUser for -User, gives -Reason and -DocumentName to the session' {
        $before = @(Get-EmulatorSession $emu).session_id
        $code = Start-SSMSshSession -Target $instance -SshUser $user -IdentityFile $sshd.ClientKey -Command 'exit 2' -SshArgument $sshArgs -PassThru -Reason 'CHG-7 patch' -DocumentName AWS-StartSSHSession @aws
        $code | Should -Be 2
        $session = @(Get-EmulatorSession $emu | Where-Object session_id -NotIn $before)
        $session | Should -HaveCount 1
        $session[0].reason | Should -Be 'CHG-7 patch'
        $session[0].document | Should -Be 'AWS-StartSSHSession'
    }

    It 'fails through ssh when -DocumentName names no document' {
        $code = Start-SSMSshSession -Target $instance -User $user -IdentityFile $sshd.ClientKey -Command 'exit 0' -SshArgument $sshArgs -PassThru -DocumentName NoSuchSshDocument @aws 2>$null
        $code | Should -Be 255
    }

    It 'refuses a -CertificateFile that does not exist before starting ssh' {
        { Start-SSMSshSession -Target $instance -User $user -IdentityFile $sshd.ClientKey -CertificateFile (New-TestTempPath 'no-cert' -Extension '.pub') -Command 'exit 0' @aws -ErrorAction Stop } |
            Should -Throw -ErrorId 'SSMConnect.InvalidArgument,*'
    }

    Context 'OpenSSH certificates' {
        BeforeAll {
            # sshd trusts a CA and no key on its own: only a certificate the CA signed logs in.
            $ca = New-TestTempPath 'ssmc-ca'
            & ssh-keygen -q -t ed25519 -N '' -f $ca
            $noKeys = New-TestTempPath 'ssmc-no-keys'
            Set-Content -LiteralPath $noKeys -Value ''
            $certSshd = Start-TestSshd -AuthorizedKeysFile $noKeys -TrustedUserCAKeys "$ca.pub"
            $certEmu = Start-Emulator -ArgumentList '--port-map', "22=$($certSshd.Port)" -Config @{ inventory = @(@{ instance_id = $instance }) }
            $certAws = $certEmu.AwsParameters
            # The certificate lives away from the key, so ssh finds it only when told.
            $certDir = New-TestTempPath 'ssmc-cert'
            New-Item -ItemType Directory -Path $certDir | Out-Null
            Copy-Item "$($certSshd.ClientKey).pub" (Join-Path $certDir 'user.pub')
            & ssh-keygen -q -s $ca -I pester -n $user (Join-Path $certDir 'user.pub')
            $cert = Join-Path $certDir 'user-cert.pub'
        }

        AfterAll {
            Stop-Emulator $certEmu
            Stop-TestDaemon $certSshd
            Remove-Item -LiteralPath $ca, "$ca.pub", $noKeys, $certDir -Recurse -Force -ErrorAction SilentlyContinue
        }

        It 'cannot log in with the key alone' {
            $code = Start-SSMSshSession -Target $instance -User $user -IdentityFile $certSshd.ClientKey -Command 'exit 5' -SshArgument $sshArgs -PassThru @certAws 2>$null
            $code | Should -Be 255
        }

        It 'logs in with -CertificateFile, and with its alias -CertPath' {
            $code = Start-SSMSshSession -Target $instance -User $user -IdentityFile $certSshd.ClientKey -CertificateFile $cert -Command 'exit 5' -SshArgument $sshArgs -PassThru @certAws
            $code | Should -Be 5
            $code = Start-SSMSshSession -Target $instance -User $user -IdentityFile $certSshd.ClientKey -CertPath $cert -Command 'exit 6' -SshArgument $sshArgs -PassThru @certAws
            $code | Should -Be 6
        }
    }

    Context 'EC2 Instance Connect' {
        BeforeAll {
            # sshd accepts only the keys the emulator's Instance Connect writes.
            $keys = New-TestTempPath 'ssmc-ec2ic'
            $icSshd = Start-TestSshd -AuthorizedKeysFile $keys
            $icEmu = Start-Emulator -Config @{
                inventory       = @(@{ instance_id = $instance; port_map = @{ '22' = $icSshd.Port } })
                authorized_keys = $keys
            }
            $saved = @{ EC2 = $env:AWS_ENDPOINT_URL_EC2; IC = $env:AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT }
            $env:AWS_ENDPOINT_URL_EC2 = $icEmu.Endpoint
            $env:AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT = $icEmu.Endpoint
            $icAws = $icEmu.AwsParameters
        }

        AfterAll {
            $env:AWS_ENDPOINT_URL_EC2 = $saved.EC2
            $env:AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT = $saved.IC
            Stop-Emulator $icEmu
            Stop-TestDaemon $icSshd
            Remove-Item -LiteralPath $keys -ErrorAction SilentlyContinue
        }

        # First: a pushed key stays valid for 60 seconds.
        It 'cannot log in without pushing the key' {
            $code = Start-SSMSshSession -Target $instance -User $user -IdentityFile $icSshd.ClientKey -Command 'exit 6' -SshArgument $sshArgs -PassThru @icAws
            $code | Should -Be 255
        }

        It 'pushes the public key first with -UseInstanceConnect, so that the login succeeds' {
            $code = Start-SSMSshSession -Target $instance -User $user -IdentityFile $icSshd.ClientKey -UseInstanceConnect -Command 'exit 6' -SshArgument $sshArgs -PassThru @icAws
            $code | Should -Be 6
        }
    }
}

# Start-SSMPortForward against the emulator: ports, data, pipeline binding, errors, -WhatIf, -Wait,
# and stopping while it connects.

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force -Global
    $instance = 'i-0123456789abcdef0'
    # Two running instances share Name=web (ambiguous); none is called nothing (not found).
    $emu, $echo = Start-ForwardTestBed -ArgumentList '--unpaced' -Config @{
        inventory = @(
            @{ instance_id = 'i-0aaaaaaaaaaaaaaa1'; tags = @{ Name = 'web' } }
            @{ instance_id = 'i-0aaaaaaaaaaaaaaa2'; tags = @{ Name = 'web' } }
            @{ instance_id = 'i-0ccccccccccccccc3'; tags = @{ Name = 'db' } }
        )
    }
    $aws = $emu.AwsParameters
}

AfterAll {
    Stop-ForwardTestBed $emu $echo
}

Describe 'Start-SSMPortForward' {
    AfterEach {
        Get-SSMPortForward | Stop-SSMPortForward
    }

    It 'returns a forward listening on a port the system chose' {
        $f = Start-SSMPortForward -Target $instance -RemotePort $echo.Port @aws
        $f | Should -HaveCount 1
        $f | Should -BeOfType ([SSMConnect.PortForward])
        $f.LocalPort | Should -BeGreaterThan 0
        $f.LocalAddress | Should -Be '127.0.0.1'
        $f.LocalEndpoint | Should -Be "127.0.0.1:$($f.LocalPort)"
        $f.Target | Should -Be $instance
        $f.InstanceId | Should -Be $instance
        $f.RemotePort | Should -Be $echo.Port
        $f.SessionId | Should -Not -BeNullOrEmpty
        $f.State | Should -Be 'Running'
        $f.Id | Should -BeGreaterThan 0
        Test-PortListening $f.LocalPort | Should -BeTrue
        (Get-EmulatorSession $emu).session_id | Should -Contain $f.SessionId
    }

    It 'listens on the port asked for' {
        $port = Get-FreePort
        $f = Start-SSMPortForward -Target $instance -RemotePort $echo.Port -LocalPort $port @aws
        $f.LocalPort | Should -Be $port
    }

    It 'moves 16 MiB both ways intact' {
        $f = Start-SSMPortForward -Target $instance -RemotePort $echo.Port @aws
        $data = [SSMConnectTests.Net]::RandomBytes(16MB)
        $back = [SSMConnectTests.Net]::RoundTrip($f.LocalPort, $data, 180)
        $back.Length | Should -Be $data.Length
        [SSMConnectTests.Net]::Sha256($back) | Should -Be ([SSMConnectTests.Net]::Sha256($data))
        $f.BytesSent | Should -BeGreaterOrEqual 16MB
        $f.BytesReceived | Should -BeGreaterOrEqual 16MB
        $f.Connections | Should -BeGreaterOrEqual 1
    }

    It 'frees the port and ends the session when stopped' {
        $f = Start-SSMPortForward -Target $instance -RemotePort $echo.Port @aws
        $port = $f.LocalPort
        Stop-SSMPortForward -Id $f.Id
        Wait-PortClosed $port | Should -BeTrue
        $f.State | Should -Not -Be 'Running'
        Wait-Until { (Get-EmulatorSession $emu | Where-Object session_id -EQ $f.SessionId).ended } | Should -BeTrue
    }

    It 'warns once when it listens on an address other hosts can reach' {
        $f = Start-SSMPortForward -Target $instance -RemotePort $echo.Port -LocalAddress 0.0.0.0 @aws -WarningVariable w -WarningAction SilentlyContinue
        $f.LocalAddress | Should -Be '0.0.0.0'
        $about = @($w | Where-Object { "$_" -like '*listening on 0.0.0.0*' })
        $about | Should -HaveCount 1
        "$($about[0])" | Should -BeLike '*every network interface*'
    }

    It 'does not warn when it listens on loopback' {
        $null = Start-SSMPortForward -Target $instance -RemotePort $echo.Port @aws -WarningVariable w -WarningAction SilentlyContinue
        @($w | Where-Object { "$_" -like '*listening on*' }) | Should -HaveCount 0
    }

    It 'gives each connection a session of its own with -SessionPerConnection, and terminates every session when stopped' {
        $before = @(Get-EmulatorSession $emu | ForEach-Object session_id)
        $mine = { @(Get-EmulatorSession $emu | Where-Object { $before -notcontains $_.session_id }) }
        $f = Start-SSMPortForward -Target $instance -RemotePort $echo.Port -SessionPerConnection -WarmSessions 1 @aws
        $f.Mode | Should -Be 'SessionPerConnection'
        $f.SessionId | Should -BeNullOrEmpty
        # The warm session is open before any connection.
        @(& $mine) | Should -HaveCount 1
        foreach ($i in 1..3) {
            $data = [SSMConnectTests.Net]::RandomBytes(64KB)
            $back = [SSMConnectTests.Net]::RoundTrip($f.LocalPort, $data, 60)
            [SSMConnectTests.Net]::Sha256($back) | Should -Be ([SSMConnectTests.Net]::Sha256($data))
        }
        # Three connections, three sessions ended with them; one warm session waits.
        Wait-Until { @(& $mine | Where-Object ended).Count -eq 3 -and @(& $mine | Where-Object { -not $_.ended }).Count -eq 1 } -TimeoutSeconds 60 |
            Should -BeTrue -Because "sessions: $(& $mine | ConvertTo-Json -Compress)"
        Stop-SSMPortForward -Id $f.Id
        Wait-Until { @(& $mine | Where-Object { -not $_.ended }).Count -eq 0 } -TimeoutSeconds 60 | Should -BeTrue
        Wait-PortClosed $f.LocalPort | Should -BeTrue
    }

    It 'refuses -WarmSessions without -SessionPerConnection' {
        { Start-SSMPortForward -Target $instance -RemotePort $echo.Port -WarmSessions 2 @aws -ErrorAction Stop } |
            Should -Throw -ErrorId 'SSMConnect.InvalidArgument,*'
        Get-SSMPortForward | Should -BeNullOrEmpty
    }

    Context '-Socks' {
        BeforeAll {
            $curl = @(Get-Command curl -CommandType Application -ErrorAction Stop)[0].Source
            $alpha = [SSMConnectTests.HttpOkServer]::new('alpha', [System.Net.IPAddress]::Loopback)
            # A second loopback address where the system has one (Linux: all of 127/8).
            $bravoAddress = if ($IsLinux) { '127.0.0.2' } else { '127.0.0.1' }
            $bravo = [SSMConnectTests.HttpOkServer]::new('bravo', [System.Net.IPAddress]::Parse($bravoAddress))
        }

        AfterAll {
            $alpha.Dispose()
            $bravo.Dispose()
        }

        It 'is a SOCKS5 proxy: curl reaches two servers, each connection through a session of its own, until stopped' {
            $f = Start-SSMPortForward -Target $instance -Socks @aws
            $f | Should -BeOfType ([SSMConnect.PortForward])
            $f.Mode | Should -Be 'Socks'
            $f.RemotePort | Should -Be 0
            $f.SessionId | Should -BeNullOrEmpty
            $f.LocalPort | Should -BeGreaterThan 0
            (Get-SSMPortForward -Id $f.Id).Id | Should -Be $f.Id
            $proxy = $f.LocalEndpoint
            # A domain name, resolved by the agent on the far side, and an IPv4 address.
            & $curl -sS --max-time 30 --socks5-hostname $proxy "http://localhost:$($alpha.Port)/" | Should -Be 'alpha'
            $LASTEXITCODE | Should -Be 0
            & $curl -sS --max-time 30 --socks5 $proxy "http://${bravoAddress}:$($bravo.Port)/" | Should -Be 'bravo'
            $LASTEXITCODE | Should -Be 0
            $f.Connections | Should -Be 2
            $mine = @(Get-EmulatorSession $emu | Where-Object { $_.parameters.portNumber -contains "$($alpha.Port)" -or $_.parameters.portNumber -contains "$($bravo.Port)" })
            $mine | Should -HaveCount 2
            $mine.document | Sort-Object -Unique | Should -Be 'AWS-StartPortForwardingSessionToRemoteHost'
            @($mine | ForEach-Object { '{0}:{1}' -f $_.parameters.host[0], $_.parameters.portNumber[0] } | Sort-Object) |
                Should -Be (@("localhost:$($alpha.Port)", "${bravoAddress}:$($bravo.Port)") | Sort-Object)
            $f | Stop-SSMPortForward
            Wait-PortClosed $f.LocalPort | Should -BeTrue
            $f.State | Should -Not -Be 'Running'
            Get-SSMPortForward | Should -BeNullOrEmpty
            Wait-Until { @(Get-EmulatorSession $emu | Where-Object { $mine.session_id -contains $_.session_id -and -not $_.ended }).Count -eq 0 } |
                Should -BeTrue
        }

        It 'takes no -RemotePort' {
            { Start-SSMPortForward -Target $instance -Socks -RemotePort 80 @aws -ErrorAction Stop } |
                Should -Throw -ErrorId 'AmbiguousParameterSet,SSMConnect.Commands.StartSSMPortForwardCommand'
            Get-SSMPortForward | Should -BeNullOrEmpty
        }
    }

    It 'starts one forward per port pair with several ports, in order' {
        $web = [SSMConnectTests.HttpOkServer]::new()
        try {
            $ports = (Get-FreePort), (Get-FreePort)
            $f = @(Start-SSMPortForward -Target $instance -RemotePort $echo.Port, $web.Port -LocalPort $ports @aws)
            $f | Should -HaveCount 2
            $f[0].LocalPort | Should -Be $ports[0]
            $f[0].RemotePort | Should -Be $echo.Port
            $f[1].LocalPort | Should -Be $ports[1]
            $f[1].RemotePort | Should -Be $web.Port
            $f[0].SessionId | Should -Not -Be $f[1].SessionId
            $data = [SSMConnectTests.Net]::RandomBytes(4096)
            [SSMConnectTests.Net]::Sha256([SSMConnectTests.Net]::RoundTrip($f[0].LocalPort, $data, 30)) | Should -Be ([SSMConnectTests.Net]::Sha256($data))
            (Invoke-WebRequest -Uri "http://$($f[1].LocalEndpoint)/" -NoProxy).Content | Should -Be 'ok'
        }
        finally {
            $web.Dispose()
        }
    }

    It 'takes the ports as a hashtable of local = remote with -PortMap, in its order' {
        $web = [SSMConnectTests.HttpOkServer]::new()
        try {
            $ports = (Get-FreePort), (Get-FreePort)
            # (An int indexes an ordered dictionary by position: Add takes it as a key.)
            $map = [ordered]@{}
            $map.Add($ports[0], $web.Port)
            $map.Add($ports[1], $echo.Port)
            $f = @(Start-SSMPortForward -Target $instance -PortMap $map @aws)
            $f | Should -HaveCount 2
            $f[0].LocalPort | Should -Be $ports[0]
            $f[0].RemotePort | Should -Be $web.Port
            $f[1].LocalPort | Should -Be $ports[1]
            $f[1].RemotePort | Should -Be $echo.Port
            (Invoke-WebRequest -Uri "http://$($f[0].LocalEndpoint)/" -NoProxy).Content | Should -Be 'ok'
            $data = [SSMConnectTests.Net]::RandomBytes(4096)
            [SSMConnectTests.Net]::Sha256([SSMConnectTests.Net]::RoundTrip($f[1].LocalPort, $data, 30)) | Should -Be ([SSMConnectTests.Net]::Sha256($data))
            # A local port of 0 picks a free one.
            $free = @(Start-SSMPortForward -Target $instance -PortMap @{ 0 = $echo.Port } @aws)
            $free | Should -HaveCount 1
            $free[0].LocalPort | Should -BeGreaterThan 0
            Test-PortListening $free[0].LocalPort | Should -BeTrue
        }
        finally {
            $web.Dispose()
        }
    }

    It 'refuses a -PortMap entry that is not a port with SSMConnect.InvalidArgument, starting nothing' {
        $before = @(Get-EmulatorSession $emu).Count
        { Start-SSMPortForward -Target $instance -PortMap @{ 15432 = 'postgres' } @aws -ErrorAction Stop } |
            Should -Throw -ErrorId 'SSMConnect.InvalidArgument,*' -ExpectedMessage '*-PortMap entry*'
        { Start-SSMPortForward -Target $instance -PortMap @{ 70000 = 22 } @aws -ErrorAction Stop } |
            Should -Throw -ErrorId 'SSMConnect.InvalidArgument,*'
        @(Get-EmulatorSession $emu).Count | Should -Be $before
    }

    It 'picks a free local port for each remote port without -LocalPort' {
        $f = @(Start-SSMPortForward -Target $instance -RemotePort $echo.Port, $echo.Port @aws)
        $f | Should -HaveCount 2
        $f[0].LocalPort | Should -Not -Be $f[1].LocalPort
        $f | ForEach-Object { Test-PortListening $_.LocalPort | Should -BeTrue }
    }

    It 'refuses different numbers of local and remote ports with SSMConnect.PortCountMismatch, starting nothing' {
        $before = @(Get-EmulatorSession $emu).Count
        $port = Get-FreePort
        { Start-SSMPortForward -Target $instance -RemotePort $echo.Port, $echo.Port -LocalPort $port @aws -ErrorAction Stop } |
            Should -Throw -ErrorId 'SSMConnect.PortCountMismatch,*'
        Test-PortListening $port | Should -BeFalse
        @(Get-EmulatorSession $emu).Count | Should -Be $before
    }

    It 'starts the session with -DocumentName' {
        $f = Start-SSMPortForward -Target $instance -RemotePort $echo.Port -DocumentName 'AWS-StartPortForwardingSession' @aws
        (Get-EmulatorSession $emu | Where-Object session_id -EQ $f.SessionId).document | Should -Be 'AWS-StartPortForwardingSession'
        $err = $null
        $null = Start-SSMPortForward -Target $instance -RemotePort $echo.Port -DocumentName 'NoSuchPortDocument' @aws -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1
        $err[0].FullyQualifiedErrorId | Should -BeLike 'SSMConnect.ApiError,*'
        "$($err[0])" | Should -Match 'NoSuchPortDocument'
    }

    It 'gives -Reason to StartSession' {
        $f = Start-SSMPortForward -Target $instance -RemotePort $echo.Port -Reason 'CHG-1234 health check' @aws
        (Get-EmulatorSession $emu | Where-Object session_id -EQ $f.SessionId).reason | Should -Be 'CHG-1234 health check'
        $g = Start-SSMPortForward -Target $instance -RemotePort $echo.Port @aws
        (Get-EmulatorSession $emu | Where-Object session_id -EQ $g.SessionId).reason | Should -BeNullOrEmpty
    }

    It 'shows progress and native logs only when asked' {
        $f = Start-SSMPortForward -Target $instance -RemotePort $echo.Port @aws -Verbose 4>&1
        $records = @($f | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] })
        $records.Count | Should -BeGreaterThan 0
        @($f | Where-Object { $_ -is [SSMConnect.PortForward] }) | Should -HaveCount 1
    }

    Context 'pipeline input' {
        It 'binds strings' {
            $f = @($instance, 'i-0fedcba9876543210' | Start-SSMPortForward -RemotePort $echo.Port @aws)
            $f | Should -HaveCount 2
            $f.Target | Should -Be @($instance, 'i-0fedcba9876543210')
            ($f.LocalPort | Select-Object -Unique) | Should -HaveCount 2
        }

        It 'binds objects with an InstanceId property' {
            $f = [pscustomobject]@{ InstanceId = $instance; State = 'running' } | Start-SSMPortForward -RemotePort $echo.Port @aws
            $f.Target | Should -Be $instance
        }

        It 'binds objects with an Instances property, each instance a forward' {
            $reservation = [pscustomobject]@{
                ReservationId = 'r-0123456789abcdef0'
                Instances     = @(
                    [pscustomobject]@{ InstanceId = $instance }
                    [pscustomobject]@{ InstanceId = 'i-0fedcba9876543210' }
                )
            }
            $f = @($reservation | Start-SSMPortForward -RemotePort $echo.Port @aws)
            $f | Should -HaveCount 2
            $f.Target | Should -Be @($instance, 'i-0fedcba9876543210')
        }

        It 'moves data through a forward made from pipeline input' {
            $f = [pscustomobject]@{ InstanceId = $instance } | Start-SSMPortForward -RemotePort $echo.Port @aws
            $data = [SSMConnectTests.Net]::RandomBytes(65536)
            [SSMConnectTests.Net]::Sha256([SSMConnectTests.Net]::RoundTrip($f.LocalPort, $data, 60)) |
                Should -Be ([SSMConnectTests.Net]::Sha256($data))
        }

        It 'refuses objects that hold no target with SSMConnect.NoTarget' {
            { [pscustomobject]@{ Name = 'web' } | Start-SSMPortForward -RemotePort 80 @aws -ErrorAction Stop } |
                Should -Throw -ErrorId 'SSMConnect.NoTarget,*'
        }
    }

    # Get-EC2Instance's output: real Amazon.EC2.Model.Reservation objects from DescribeInstances
    # through AmazonEC2Client (AWSSDK.EC2, as AWS Tools ships it) at the emulator's EC2 endpoint.
    Context 'Amazon.EC2.Model objects from the AWS SDK' {
        It 'takes Reservation objects, each instance a forward' {
            $reservations = @(Get-TestEC2Instance -Endpoint $emu.Endpoint -Filter @{ Name = 'tag:Name'; Values = 'web' })
            $reservations | ForEach-Object { $_ | Should -BeOfType ([Amazon.EC2.Model.Reservation]) }
            $f = @($reservations | Start-SSMPortForward -RemotePort $echo.Port @aws)
            $f | Should -HaveCount 2
            @($f.InstanceId | Sort-Object) | Should -Be @('i-0aaaaaaaaaaaaaaa1', 'i-0aaaaaaaaaaaaaaa2')
        }

        It 'takes Instance objects from Select-Object -ExpandProperty Instances and moves 16 MiB intact' {
            $instances = @(Get-TestEC2Instance -Endpoint $emu.Endpoint -Filter @{ Name = 'tag:Name'; Values = 'db' } |
                    Select-Object -ExpandProperty Instances)
            $instances | Should -HaveCount 1
            $instances[0] | Should -BeOfType ([Amazon.EC2.Model.Instance])
            $f = $instances | Start-SSMPortForward -RemotePort $echo.Port @aws
            $f.InstanceId | Should -Be 'i-0ccccccccccccccc3'
            $data = [SSMConnectTests.Net]::RandomBytes(16MB)
            $back = [SSMConnectTests.Net]::RoundTrip($f.LocalPort, $data, 180)
            $back.Length | Should -Be $data.Length
            [SSMConnectTests.Net]::Sha256($back) | Should -Be ([SSMConnectTests.Net]::Sha256($data))
        }
    }

    Context 'errors' {
        It 'fails at once with SSMConnect.PortInUse when the local port is taken' {
            $busy = [System.Net.Sockets.TcpListener]::new([System.Net.IPAddress]::Loopback, 0)
            $busy.Start()
            try {
                $port = $busy.LocalEndpoint.Port
                $watch = [System.Diagnostics.Stopwatch]::StartNew()
                Start-SSMPortForward -Target $instance -RemotePort 22 -LocalPort $port @aws -ErrorAction SilentlyContinue -ErrorVariable err |
                    Should -BeNullOrEmpty
                $watch.Elapsed.TotalSeconds | Should -BeLessThan 10
                $err | Should -HaveCount 1
                $err[0].FullyQualifiedErrorId | Should -BeLike 'SSMConnect.PortInUse,*'
                $err[0].CategoryInfo.Category | Should -Be 'ResourceUnavailable'
                $err[0].TargetObject | Should -Be $instance
                Get-SSMPortForward | Should -BeNullOrEmpty
            }
            finally {
                $busy.Stop()
            }
        }

        It 'goes on with the next pipeline target after a failure' {
            $f = @([pscustomobject]@{ Name = 'no target here' }, $instance | Start-SSMPortForward -RemotePort $echo.Port @aws -ErrorAction SilentlyContinue -ErrorVariable err)
            $f | Should -HaveCount 1
            $f[0].Target | Should -Be $instance
            $err | Should -HaveCount 1
            $err[0].FullyQualifiedErrorId | Should -BeLike 'SSMConnect.NoTarget,*'
        }
    }

    # Tags are resolved with EC2 DescribeInstances at the emulator, named by AWS_ENDPOINT_URL_EC2.
    # On Linux and macOS the native library in this process cannot see a variable set after
    # pwsh started, so these run in a child pwsh that has it from the start.
    Context 'target resolution (child pwsh)' {
        BeforeAll {
            $child = Invoke-ChildPwsh -Environment @{ AWS_ENDPOINT_URL_EC2 = $emu.Endpoint } -ArgumentList @(
                (Get-TestModuleManifest), $emu.Endpoint, $aws.Region, $aws.AccessKey, $aws.SecretKey, [string]$echo.Port
            ) -ScriptBlock {
                param($Manifest, $Endpoint, $Region, $AccessKey, $SecretKey, $EchoPort)
                Import-Module $Manifest -ErrorAction Stop
                $aws = @{ EndpointUrl = $Endpoint; Region = $Region; AccessKey = $AccessKey; SecretKey = $SecretKey }
                function Report([string] $Name, $Errors) {
                    if ($Errors) {
                        $e = $Errors[0]
                        "$Name=$($e.FullyQualifiedErrorId)|$($e.CategoryInfo.Category)|$($e.Exception.Message -replace '\s+', ' ')"
                    }
                    else { "$Name=none" }
                }
                $f = Start-SSMPortForward -Target 'Name:db' -RemotePort $EchoPort @aws -ErrorAction SilentlyContinue -ErrorVariable e1
                "db=$($f.InstanceId)|$($f.Target)|$($f.LocalPort)"
                Report 'db-error' $e1
                $null = Start-SSMPortForward -Target 'Name:web' -RemotePort 22 @aws -ErrorAction SilentlyContinue -ErrorVariable e2
                Report 'web' $e2
                $null = Start-SSMPortForward -Target 'Name:nothing' -RemotePort 22 @aws -ErrorAction SilentlyContinue -ErrorVariable e3
                Report 'nothing' $e3
                "running=$(@(Get-SSMPortForward).Count)"
                Get-SSMPortForward | Stop-SSMPortForward
            }
            $result = @{}
            foreach ($line in $child.Output) {
                $key, $value = $line -split '=', 2
                $result[$key] = $value
            }
        }

        It 'ran' {
            $child.ExitCode | Should -Be 0 -Because $child.Errors
        }

        It 'resolves a tag one running instance carries to that instance' {
            $result['db-error'] | Should -Be 'none'
            $instanceId, $target, $port = $result['db'] -split '\|'
            $instanceId | Should -Be 'i-0ccccccccccccccc3'
            $target | Should -Be 'Name:db'
            [int]$port | Should -BeGreaterThan 0
        }

        It 'reports a tag several instances carry as SSMConnect.AmbiguousTarget, listing them' {
            $id, $category, $message = $result['web'] -split '\|', 3
            $id | Should -BeLike 'SSMConnect.AmbiguousTarget,*'
            $category | Should -Be 'InvalidArgument'
            $message | Should -Match 'i-0aaaaaaaaaaaaaaa1'
            $message | Should -Match 'i-0aaaaaaaaaaaaaaa2'
        }

        It 'reports a tag no instance carries as SSMConnect.TargetNotFound' {
            $id, $category, $null = $result['nothing'] -split '\|', 3
            $id | Should -BeLike 'SSMConnect.TargetNotFound,*'
            $category | Should -Be 'ObjectNotFound'
        }

        It 'leaves only the forward that succeeded' {
            $result['running'] | Should -Be '1'
        }
    }

    # What AWS Tools for PowerShell users pass for credentials and region, searched in AWS Tools'
    # order. The emulator records the access key id and region each StartSession was signed with.
    Context 'credentials and region as AWS Tools users give them' {
        BeforeAll {
            Import-TestAwsSdk
            $files = New-TestAwsFiles
            $endpoint = @{ EndpointUrl = $emu.Endpoint }
            $region = @{ Region = $TestRegion }
            $saved = @{}
            $variables = 'AWS_SHARED_CREDENTIALS_FILE', 'AWS_CONFIG_FILE', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE', 'AWS_REGION', 'AWS_DEFAULT_REGION'
            foreach ($name in $variables) { $saved[$name] = [Environment]::GetEnvironmentVariable($name) }
            # The signer of the session behind a forward, as the emulator saw it.
            function Get-Signer([Parameter(ValueFromPipeline)] $Forward) {
                process {
                    $s = Get-EmulatorSession $emu | Where-Object session_id -EQ $Forward.SessionId
                    "$($s.access_key_id)@$($s.signing_region)"
                }
            }
            function New-BasicCredentials([string] $Key) { [Amazon.Runtime.BasicAWSCredentials]::new($Key, "secret-of-$Key") }
        }

        AfterEach {
            Get-SSMPortForward | Stop-SSMPortForward
            Remove-Variable -Scope Global -Name StoredAWSCredentials, StoredAWSRegion -ErrorAction SilentlyContinue
            foreach ($name in $variables) {
                if ($null -eq $saved[$name]) { Remove-Item "env:$name" -ErrorAction SilentlyContinue } else { Set-Item "env:$name" $saved[$name] }
            }
        }

        AfterAll {
            Remove-Item -LiteralPath $files.Directory -Recurse -Force -ErrorAction SilentlyContinue
        }

        It 'takes -AccessKey, -SecretKey and -SessionToken, and their aliases -AK, -SK and -ST' {
            Start-SSMPortForward -Target $instance -RemotePort $echo.Port @endpoint @region -AccessKey AKIDLITERAL1 -SecretKey s1 -SessionToken t1 |
                Get-Signer | Should -Be "AKIDLITERAL1@$TestRegion"
            Start-SSMPortForward -Target $instance -RemotePort $echo.Port @endpoint @region -AK AKIDLITERAL2 -SK s2 -ST t2 |
                Get-Signer | Should -Be "AKIDLITERAL2@$TestRegion"
        }

        It 'reads -ProfileName (and -StoredCredentials, -AWSProfileName) from the files AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE name, set in this session' {
            $env:AWS_SHARED_CREDENTIALS_FILE = $files.CredentialsFile
            $env:AWS_CONFIG_FILE = $files.ConfigFile
            Start-SSMPortForward -Target $instance -RemotePort $echo.Port @endpoint @region -ProfileName ops |
                Get-Signer | Should -Be "AKIDOPSPROFILE@$TestRegion"
            Start-SSMPortForward -Target $instance -RemotePort $echo.Port @endpoint @region -StoredCredentials prod |
                Get-Signer | Should -Be "AKIDPRODPROFILE@$TestRegion"
            Start-SSMPortForward -Target $instance -RemotePort $echo.Port @endpoint @region -AWSProfileName ops |
                Get-Signer | Should -Be "AKIDOPSPROFILE@$TestRegion"
            # No -Region: the profile's region from the config file.
            Start-SSMPortForward -Target $instance -RemotePort $echo.Port @endpoint -ProfileName ops |
                Get-Signer | Should -Be 'AKIDOPSPROFILE@ap-southeast-2'
        }

        It 'reads -ProfileLocation: alone its default profile, with -ProfileName the named one' {
            Start-SSMPortForward -Target $instance -RemotePort $echo.Port @endpoint @region -ProfileLocation $files.CredentialsFile |
                Get-Signer | Should -Be "AKIDDEFAULTPROFILE@$TestRegion"
            Start-SSMPortForward -Target $instance -RemotePort $echo.Port @endpoint @region -ProfileLocation $files.CredentialsFile -ProfileName prod |
                Get-Signer | Should -Be "AKIDPRODPROFILE@$TestRegion"
            Start-SSMPortForward -Target $instance -RemotePort $echo.Port @endpoint @region -ProfilesLocation $files.CredentialsFile -ProfileName ops |
                Get-Signer | Should -Be "AKIDOPSPROFILE@$TestRegion"
        }

        It 'fails with SSMConnect.InvalidArgument when -ProfileLocation names no file' {
            $missing = Join-Path $files.Directory 'no-such-credentials'
            { Start-SSMPortForward -Target $instance -RemotePort $echo.Port @endpoint @region -ProfileLocation $missing -ErrorAction Stop } |
                Should -Throw -ErrorId 'SSMConnect.InvalidArgument,*'
            Get-SSMPortForward | Should -BeNullOrEmpty
        }

        It 'takes -Credential as an Amazon.Runtime.AWSCredentials' {
            Start-SSMPortForward -Target $instance -RemotePort $echo.Port @endpoint @region -Credential (New-BasicCredentials AKIDCREDOBJECT) |
                Get-Signer | Should -Be "AKIDCREDOBJECT@$TestRegion"
            $session = [Amazon.Runtime.SessionAWSCredentials]::new('AKIDSESSIONOBJ', 'secret', 'token')
            Start-SSMPortForward -Target $instance -RemotePort $echo.Port @endpoint @region -Credential $session |
                Get-Signer | Should -Be "AKIDSESSIONOBJ@$TestRegion"
        }

        It 'honours $StoredAWSCredentials and $StoredAWSRegion as Set-AWSCredential and Set-DefaultAWSRegion leave them' {
            $global:StoredAWSCredentials = [SSMConnectTests.AWSPSCredentials]@{ Credentials = (New-BasicCredentials AKIDSTORED); Name = $null }
            $global:StoredAWSRegion = 'eu-west-3'
            Start-SSMPortForward -Target $instance -RemotePort $echo.Port @endpoint |
                Get-Signer | Should -Be 'AKIDSTORED@eu-west-3'
            # -Region still wins over the stored region.
            Start-SSMPortForward -Target $instance -RemotePort $echo.Port @endpoint -Region ca-central-1 |
                Get-Signer | Should -Be 'AKIDSTORED@ca-central-1'
        }

        It 'searches in AWS Tools'' order: keys, -Credential, profile, session credentials, environment' {
            $env:AWS_ACCESS_KEY_ID = 'AKIDENVIRONMENT'
            $env:AWS_SECRET_ACCESS_KEY = 'secret'
            $global:StoredAWSCredentials = [SSMConnectTests.AWSPSCredentials]@{ Credentials = (New-BasicCredentials AKIDSTORED) }
            $all = @{
                AccessKey       = 'AKIDLITERAL'
                SecretKey       = 'secret'
                Credential      = New-BasicCredentials AKIDCREDOBJECT
                ProfileName     = 'ops'
                ProfileLocation = $files.CredentialsFile
            }
            $seen = foreach ($drop in @(), @('AccessKey', 'SecretKey'), @('Credential'), @('ProfileName', 'ProfileLocation')) {
                foreach ($name in $drop) { $all.Remove($name) }
                Start-SSMPortForward -Target $instance -RemotePort $echo.Port @endpoint @region @all | Get-Signer
            }
            Remove-Variable -Scope Global -Name StoredAWSCredentials
            $seen += Start-SSMPortForward -Target $instance -RemotePort $echo.Port @endpoint @region | Get-Signer
            $seen | Should -Be @(
                "AKIDLITERAL@$TestRegion", "AKIDCREDOBJECT@$TestRegion", "AKIDOPSPROFILE@$TestRegion",
                "AKIDSTORED@$TestRegion", "AKIDENVIRONMENT@$TestRegion")
        }

        It 'refuses unusable credentials with SSMConnect.InvalidArgument before starting anything' {
            $before = @(Get-EmulatorSession $emu).Count
            { Start-SSMPortForward -Target $instance -RemotePort $echo.Port @endpoint @region -AccessKey AKIDALONE -ErrorAction Stop } |
                Should -Throw -ErrorId 'SSMConnect.InvalidArgument,*'
            { Start-SSMPortForward -Target $instance -RemotePort $echo.Port @endpoint @region -Credential 'not credentials' -ErrorAction Stop } |
                Should -Throw -ErrorId 'SSMConnect.InvalidArgument,*'
            @(Get-EmulatorSession $emu).Count | Should -Be $before
        }
    }

    # -DnsServer against a small internal resolver: dnsmasq with records and no upstream answers
    # A for web.test and refuses its AAAA and TXT, and refuses every type of nothing.test.
    Context '-DnsServer with a resolver that refuses some record types (child pwsh)' -Skip:$IsWindows {
        BeforeAll {
            $dnsEmu = Start-Emulator -ArgumentList '--unpaced' -Config @{
                inventory = @(@{ instance_id = 'i-0ddddddddddddddd4'; tags = @{ Name = 'dns-web' }; private_ip = '10.0.0.10' })
            }
            $dns = Start-TestDnsmasq -Record '--address=/web.test/10.0.0.10'
            $ready = [SSMConnectTests.Net]::DnsAnswers($dns.Port)
            $dnsAws = $dnsEmu.AwsParameters
            # In a child: the native library reads AWS_ENDPOINT_URL_EC2 (tag and address lookups)
            # from the environment its process started with.
            $child = Invoke-ChildPwsh -Environment @{ AWS_ENDPOINT_URL_EC2 = $dnsEmu.Endpoint } -ArgumentList @(
                (Get-TestModuleManifest), $dnsEmu.Endpoint, $dnsAws.Region, $dnsAws.AccessKey, $dnsAws.SecretKey, $dns.Address
            ) -ScriptBlock {
                param($Manifest, $Endpoint, $Region, $AccessKey, $SecretKey, $DnsServer)
                Import-Module $Manifest -ErrorAction Stop
                $aws = @{ EndpointUrl = $Endpoint; Region = $Region; AccessKey = $AccessKey; SecretKey = $SecretKey }
                $f = Start-SSMPortForward -Target 'web.test' -RemotePort 22 -DnsServer $DnsServer @aws -ErrorAction SilentlyContinue -ErrorVariable e1
                "web=$($f.InstanceId)|$(if ($e1) { $e1[0].FullyQualifiedErrorId + ' ' + $e1[0].Exception.Message } else { 'none' })"
                $null = Start-SSMPortForward -Target 'nothing.test' -RemotePort 22 -DnsServer $DnsServer @aws -ErrorAction SilentlyContinue -ErrorVariable e2
                if ($e2) { "nothing=$($e2[0].FullyQualifiedErrorId)|$($e2[0].CategoryInfo.Category)|$($e2[0].Exception.Message -replace '\s+', ' ')" }
                else { 'nothing=none' }
                Get-SSMPortForward | Stop-SSMPortForward
            }
            $result = @{}
            foreach ($line in $child.Output) {
                $key, $value = $line -split '=', 2
                $result[$key] = $value
            }
        }

        AfterAll {
            Stop-TestDaemon $dns
            Stop-Emulator $dnsEmu
        }

        It 'started dnsmasq and ran' {
            $ready | Should -BeTrue
            $child.ExitCode | Should -Be 0 -Because $child.Errors
        }

        It 'reaches the instance of the A record although AAAA and TXT are refused' {
            $result['web'] | Should -Be 'i-0ddddddddddddddd4|none'
        }

        It 'reports a name no type answers for as SSMConnect.ConnectionFailed, listing each type' {
            $id, $category, $message = $result['nothing'] -split '\|', 3
            $id | Should -BeLike 'SSMConnect.ConnectionFailed,*'
            $category | Should -Be 'ConnectionError'
            $message | Should -Be 'DNS lookup of nothing.test found nothing usable: A: refused, AAAA: refused, TXT: refused'
        }
    }

    Context '-WhatIf' {
        It 'starts nothing' {
            $port = Get-FreePort
            $before = @(Get-EmulatorSession $emu).Count
            Start-SSMPortForward -Target $instance -RemotePort $echo.Port -LocalPort $port -WhatIf @aws | Should -BeNullOrEmpty
            Test-PortListening $port | Should -BeFalse
            Get-SSMPortForward | Should -BeNullOrEmpty
            @(Get-EmulatorSession $emu).Count | Should -Be $before
        }
    }

    Context 'in another runspace, as Ctrl+C sees it' {
        BeforeAll {
            $manifest = Get-TestModuleManifest
            function Start-InRunspace([scriptblock] $Script, [object[]] $Arguments) {
                $ps = [powershell]::Create()
                $null = $ps.AddScript("Import-Module '$($manifest -replace "'", "''")'").AddStatement()
                $null = $ps.AddScript($Script.ToString())
                foreach ($a in $Arguments) { $null = $ps.AddArgument($a) }
                [pscustomobject]@{ PowerShell = $ps; Async = $ps.BeginInvoke() }
            }
        }

        It '-Wait blocks while forwarding, and stopping the pipeline stops the forward' {
            $port = Get-FreePort
            $run = Start-InRunspace {
                param($Port, $RemotePort, $Aws)
                Start-SSMPortForward -Target i-0123456789abcdef0 -RemotePort $RemotePort -LocalPort $Port -Wait @Aws
            } @($port, $echo.Port, $aws)
            try {
                Wait-Until { Test-PortListening $port } | Should -BeTrue
                $run.Async.IsCompleted | Should -BeFalse
                $data = [SSMConnectTests.Net]::RandomBytes(100000)
                [SSMConnectTests.Net]::Sha256([SSMConnectTests.Net]::RoundTrip($port, $data, 60)) | Should -Be ([SSMConnectTests.Net]::Sha256($data))
                $run.PowerShell.Stop()
                $run.PowerShell.InvocationStateInfo.State | Should -Be 'Stopped'
                Wait-PortClosed $port | Should -BeTrue
                Get-SSMPortForward | Where-Object LocalPort -EQ $port | Should -BeNullOrEmpty
            }
            finally {
                $run.PowerShell.Dispose()
            }
        }

        It 'stopping while it connects leaves nothing listening and no session open' {
            # Every frame to the client is lost, so the handshake never completes.
            $stuck = Start-Emulator -ArgumentList '--faults', '{"to_client":{"drop":1.0}}'
            $port = Get-FreePort
            $run = Start-InRunspace {
                param($Port, $Aws)
                Start-SSMPortForward -Target i-0123456789abcdef0 -RemotePort 22 -LocalPort $Port @Aws
            } @($port, $stuck.AwsParameters)
            try {
                # The port is bound before the session starts: it listening means it is connecting.
                Wait-Until { Test-PortListening $port } | Should -BeTrue
                $run.Async.IsCompleted | Should -BeFalse
                $run.PowerShell.Stop()
                $run.PowerShell.InvocationStateInfo.State | Should -Be 'Stopped'
                Wait-PortClosed $port | Should -BeTrue
                Get-SSMPortForward | Should -BeNullOrEmpty
                Wait-Until { @(Get-EmulatorSession $stuck | Where-Object { -not $_.ended }).Count -eq 0 } -TimeoutSeconds 10 |
                    Should -BeTrue
            }
            finally {
                $run.PowerShell.Dispose()
                Stop-Emulator $stuck
            }
        }
    }
}

# Stop-SSMPortForward: by id, by object, -All, -PassThru, -WhatIf, errors.

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force -Global
    $emu, $echo = Start-ForwardTestBed -ArgumentList '--unpaced'
    $aws = $emu.AwsParameters
    function New-Forward {
        Start-SSMPortForward -Target i-0123456789abcdef0 -RemotePort $echo.Port @aws
    }
}

AfterAll {
    Stop-ForwardTestBed $emu $echo
}

Describe 'Stop-SSMPortForward' {
    AfterEach {
        Get-SSMPortForward | Stop-SSMPortForward
    }

    It 'stops a forward by id: port free, session ended, no longer listed' {
        $f = New-Forward
        Stop-SSMPortForward -Id $f.Id | Should -BeNullOrEmpty
        Wait-PortClosed $f.LocalPort | Should -BeTrue
        Get-SSMPortForward | Should -BeNullOrEmpty
        $f.State | Should -Be 'Succeeded'
        Wait-Until { (Get-EmulatorSession $emu | Where-Object session_id -EQ $f.SessionId).ended } | Should -BeTrue
    }

    It 'stops forwards from the pipeline' {
        $a = New-Forward
        $b = New-Forward
        $a, $b | Stop-SSMPortForward
        Wait-PortClosed $a.LocalPort | Should -BeTrue
        Wait-PortClosed $b.LocalPort | Should -BeTrue
        Get-SSMPortForward | Should -BeNullOrEmpty
    }

    It 'stops everything with -All' {
        $a = New-Forward
        $b = New-Forward
        Stop-SSMPortForward -All
        Get-SSMPortForward | Should -BeNullOrEmpty
        Wait-PortClosed $a.LocalPort | Should -BeTrue
        Wait-PortClosed $b.LocalPort | Should -BeTrue
    }

    It 'writes the stopped forward with its final counters with -PassThru' {
        $f = New-Forward
        $data = [SSMConnectTests.Net]::RandomBytes(100000)
        $null = [SSMConnectTests.Net]::RoundTrip($f.LocalPort, $data, 60)
        $stopped = $f | Stop-SSMPortForward -PassThru
        $stopped.Id | Should -Be $f.Id
        $stopped.State | Should -Not -Be 'Running'
        $stopped.BytesSent | Should -BeGreaterOrEqual 100000
        $stopped.BytesReceived | Should -BeGreaterOrEqual 100000
    }

    It 'stops nothing with -WhatIf' {
        $f = New-Forward
        Stop-SSMPortForward -Id $f.Id -WhatIf
        Stop-SSMPortForward -All -WhatIf
        $f.State | Should -Be 'Running'
        Test-PortListening $f.LocalPort | Should -BeTrue
        (Get-SSMPortForward).Id | Should -Be $f.Id
    }

    It 'accepts a forward that is already stopped' {
        $f = New-Forward
        $f | Stop-SSMPortForward
        { $f | Stop-SSMPortForward -ErrorAction Stop } | Should -Not -Throw
    }

    It 'reports an unknown id as SSMConnect.ForwardNotFound' {
        { Stop-SSMPortForward -Id 999999 -ErrorAction Stop } | Should -Throw -ErrorId 'SSMConnect.ForwardNotFound,*'
    }
}

# Get-SSMPortForward: listing, by id, by target pattern, live counters, errors, formatting.

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force -Global
    $emu, $echo = Start-ForwardTestBed -ArgumentList '--unpaced'
    $aws = $emu.AwsParameters
}

AfterAll {
    Stop-ForwardTestBed $emu $echo
}

Describe 'Get-SSMPortForward' {
    BeforeEach {
        Get-SSMPortForward | Stop-SSMPortForward
    }

    It 'returns nothing when no forward runs' {
        Get-SSMPortForward | Should -BeNullOrEmpty
    }

    It 'lists the running forwards by increasing id' {
        $a = Start-SSMPortForward -Target i-0123456789abcdef0 -RemotePort $echo.Port @aws
        $b = Start-SSMPortForward -Target i-0fedcba9876543210 -RemotePort $echo.Port @aws
        $all = @(Get-SSMPortForward)
        $all | Should -HaveCount 2
        $all[0].Id | Should -Be $a.Id
        $all[1].Id | Should -Be $b.Id
        $b.Id | Should -BeGreaterThan $a.Id
    }

    It 'gets forwards by id, from the parameter and from the pipeline' {
        $a = Start-SSMPortForward -Target i-0123456789abcdef0 -RemotePort $echo.Port @aws
        $null = Start-SSMPortForward -Target i-0fedcba9876543210 -RemotePort $echo.Port @aws
        (Get-SSMPortForward -Id $a.Id).LocalPort | Should -Be $a.LocalPort
        ([pscustomobject]@{ Id = $a.Id } | Get-SSMPortForward).Target | Should -Be 'i-0123456789abcdef0'
    }

    It 'filters by target with wildcards' {
        $null = Start-SSMPortForward -Target i-0123456789abcdef0 -RemotePort $echo.Port @aws
        $null = Start-SSMPortForward -Target i-0fedcba9876543210 -RemotePort $echo.Port @aws
        @(Get-SSMPortForward -Target 'i-0123*').Target | Should -Be @('i-0123456789abcdef0')
        Get-SSMPortForward -Target 'i-9*' | Should -BeNullOrEmpty
    }

    It 'shows live byte counts' {
        $f = Start-SSMPortForward -Target i-0123456789abcdef0 -RemotePort $echo.Port @aws
        (Get-SSMPortForward -Id $f.Id).BytesSent | Should -Be 0
        $data = [SSMConnectTests.Net]::RandomBytes(200000)
        $null = [SSMConnectTests.Net]::RoundTrip($f.LocalPort, $data, 60)
        $now = Get-SSMPortForward -Id $f.Id
        $now.BytesSent | Should -BeGreaterOrEqual 200000
        $now.BytesReceived | Should -BeGreaterOrEqual 200000
        $now.Connections | Should -Be 1
    }

    It 'reports an unknown id as SSMConnect.ForwardNotFound' {
        Get-SSMPortForward -Id 999999 -ErrorAction SilentlyContinue -ErrorVariable err | Should -BeNullOrEmpty
        $err | Should -HaveCount 1
        $err[0].FullyQualifiedErrorId | Should -BeLike 'SSMConnect.ForwardNotFound,*'
        $err[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        { Get-SSMPortForward -Id 999999 -ErrorAction Stop } | Should -Throw -ErrorId 'SSMConnect.ForwardNotFound,*'
    }

    It 'no longer lists a stopped forward' {
        $f = Start-SSMPortForward -Target i-0123456789abcdef0 -RemotePort $echo.Port @aws
        $f | Stop-SSMPortForward
        Get-SSMPortForward | Should -BeNullOrEmpty
    }

    It 'formats as a table with the endpoint and the counters' {
        $f = Start-SSMPortForward -Target i-0123456789abcdef0 -RemotePort $echo.Port @aws
        $text = Get-SSMPortForward | Out-String -Width 250
        $text | Should -Match 'LocalEndpoint'
        $text | Should -Match 'BytesSent'
        $text | Should -Match ([regex]::Escape($f.LocalEndpoint))
        $text | Should -Match ([regex]::Escape("i-0123456789abcdef0:$($echo.Port)"))
    }
}

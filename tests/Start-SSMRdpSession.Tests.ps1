# Start-SSMRdpSession: a local port to the instance's RDP port, the RDP client on it, the forward
# stopped when the client exits; the Windows password from EC2 GetPasswordData (the emulator's
# EC2 encrypts it to the inventory's key pair), decrypted with the key pair's private key. The
# RDP client is a stand-in (any program will do, -RdpClient): a child PowerShell that connects,
# checks that bytes come back through the instance's port 3389 (an echo server) and writes what
# it was given.

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force -Global
    Import-TestModule
    $windows = 'i-0aaaaaaaaaaaaaaa1'
    $linux = 'i-0bbbbbbbbbbbbbbb2'
    $password = 'Adm1n!' + [guid]::NewGuid().ToString('N').Substring(0, 12)
    # The key pair, as EC2 gives out its private half (PKCS#1 PEM).
    $rsa = [System.Security.Cryptography.RSA]::Create(2048)
    $pem = New-TestTempPath 'ssmc-keypair' -Extension '.pem'
    Set-Content -LiteralPath $pem -Value $rsa.ExportRSAPrivateKeyPem() -NoNewline
    $otherPem = New-TestTempPath 'ssmc-other' -Extension '.pem'
    Set-Content -LiteralPath $otherPem -Value ([System.Security.Cryptography.RSA]::Create(2048).ExportRSAPrivateKeyPem()) -NoNewline
    $echo = Start-EchoServer
    $emu = Start-Emulator -Config @{
        inventory = @(
            @{ instance_id = $windows; tags = @{ Name = 'win' }; windows_password = $password; key_pair_public_key = $rsa.ExportSubjectPublicKeyInfoPem(); port_map = @{ '3389' = $echo.Port } }
            @{ instance_id = $linux; port_map = @{ '3389' = $echo.Port } }
        )
    }
    $aws = $emu.AwsParameters
    # GetPasswordData (and tags) at the emulator's EC2.
    $savedEc2 = $env:AWS_ENDPOINT_URL_EC2
    $env:AWS_ENDPOINT_URL_EC2 = $emu.Endpoint

    # The stand-in client: connects to HOST:PORT, sends bytes and reads them back, writes what it
    # saw and the login it was handed (environment) to OUT as JSON, exits with 7.
    $client = New-TestTempPath 'ssmc-rdp-client' -Extension '.ps1'
    Set-Content -LiteralPath $client -Value @'
param([string] $HostName, [int] $Port, [string] $User, [string] $Out)
$tcp = [System.Net.Sockets.TcpClient]::new($HostName, $Port)
$stream = $tcp.GetStream()
$bytes = [byte[]](1..200 | ForEach-Object { $_ })
$stream.Write($bytes, 0, $bytes.Length)
$back = [byte[]]::new($bytes.Length)
$read = 0
while ($read -lt $back.Length) {
    $n = $stream.Read($back, $read, $back.Length - $read)
    if ($n -le 0) { break }
    $read += $n
}
$tcp.Dispose()
@{ Echoed = ($read -eq $bytes.Length) -and ([Convert]::ToBase64String($back) -eq [Convert]::ToBase64String($bytes)); User = $User; EnvUser = $env:SSMCONNECT_RDP_USER; EnvPassword = $env:SSMCONNECT_RDP_PASSWORD; Port = $Port } |
    ConvertTo-Json | Set-Content -LiteralPath $Out
exit 7
'@
    $pwsh = Get-PwshCommand
    # -RdpClient and -RdpClientArgument that run the stand-in, writing to $Out.
    function Get-ClientParameters([string] $Out) {
        @{
            RdpClient         = $pwsh[0]
            RdpClientArgument = @($pwsh | Select-Object -Skip 1) + @('-NoProfile', '-NonInteractive', '-File', $client, '{Host}', '{Port}', '{User}', $Out)
        }
    }
}

AfterAll {
    Get-SSMPortForward | Stop-SSMPortForward
    $env:AWS_ENDPOINT_URL_EC2 = $savedEc2
    Stop-Emulator $emu
    if ($echo) { $echo.Dispose() }
    Remove-Item -LiteralPath $pem, $otherPem, $client -ErrorAction SilentlyContinue
}

Describe 'Start-SSMRdpSession' {
    It 'starts the client on the forwarded port with the decrypted login, and stops the forward when it exits' {
        $out = New-TestTempPath 'ssmc-rdp-out' -Extension '.json'
        $clientParameters = Get-ClientParameters $out
        $global:LASTEXITCODE = 0
        Start-SSMRdpSession -Target Name:win -PemFile $pem @clientParameters @aws | Should -BeNullOrEmpty
        $LASTEXITCODE | Should -Be 7
        $seen = Get-Content -LiteralPath $out -Raw | ConvertFrom-Json
        $seen.Echoed | Should -BeTrue
        $seen.User | Should -Be 'Administrator'
        $seen.EnvUser | Should -Be 'Administrator'
        $seen.EnvPassword | Should -Be $password
        # The forward ended with the client, and its session with it.
        Wait-PortClosed $seen.Port | Should -BeTrue
        @(Get-SSMPortForward) | Should -HaveCount 0
        Wait-Until { @(Get-EmulatorSession $emu | Where-Object { -not $_.ended }).Count -eq 0 } | Should -BeTrue
        (Get-EmulatorSession $emu | Select-Object -Last 1).target | Should -Be $windows
        Remove-Item -LiteralPath $out
    }

    It 'with -NoClient writes the running forward and the login as a PSCredential' {
        $forward, $login = Start-SSMRdpSession -Target $windows -PemFile $pem -NoClient -UserName Admin2 @aws -InformationVariable info
        $forward | Should -BeOfType ([SSMConnect.PortForward])
        $forward.RemotePort | Should -Be 3389
        Test-PortListening $forward.LocalPort | Should -BeTrue
        $login | Should -BeOfType ([pscredential])
        $login.UserName | Should -Be 'Admin2'
        $login.GetNetworkCredential().Password | Should -Be $password
        "$info" | Should -Match ([regex]::Escape($forward.LocalEndpoint))
        $forward | Stop-SSMPortForward
        Wait-PortClosed $forward.LocalPort | Should -BeTrue
    }

    It 'starts nothing when the key file is not the key pair the instance was launched with' {
        $before = @(Get-EmulatorSession $emu).Count
        { Start-SSMRdpSession -Target $windows -PemFile $otherPem -NoClient @aws -ErrorAction Stop } |
            Should -Throw -ErrorId 'SSMConnect.Configuration,*' -ExpectedMessage '*not the key pair*'
        @(Get-EmulatorSession $emu).Count | Should -Be $before
        @(Get-SSMPortForward) | Should -HaveCount 0
    }

    It 'says when EC2 has no password for the instance' {
        { Start-SSMRdpSession -Target $linux -PemFile $pem -NoClient @aws -ErrorAction Stop } |
            Should -Throw -ErrorId 'SSMConnect.ApiError,*' -ExpectedMessage '*not a Windows instance*'
    }

    It 'reports a client that cannot start as SSMConnect.RdpClientNotFound and stops the forward' {
        $missing = New-TestTempPath 'no-rdp-client'
        $err = $null
        Start-SSMRdpSession -Target $windows -RdpClient $missing @aws -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1
        $err[0].FullyQualifiedErrorId | Should -BeLike 'SSMConnect.RdpClientNotFound,*'
        @(Get-SSMPortForward) | Should -HaveCount 0
    }

    It 'starts nothing with -WhatIf' {
        $before = @(Get-EmulatorSession $emu).Count
        Start-SSMRdpSession -Target $windows -NoClient -WhatIf @aws | Should -BeNullOrEmpty
        @(Get-EmulatorSession $emu).Count | Should -Be $before
    }
}

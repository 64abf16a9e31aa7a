# The one helper module of the Pester suite: where the module and the emulator are, and the
# loopback servers the tests talk to (the emulator, a TCP echo server, test daemons such as a
# private sshd and dnsmasq). Everything starts on ports the OS picks and is stopped by the tests'
# AfterAll blocks; every process started here is stopped by Stop-TestProcess.

Set-StrictMode -Version 3.0

$RepoRoot = Split-Path -Parent $PSScriptRoot

# Dummy credentials and region for the emulator (it checks nothing, but the SDK wants some).
$TestRegion = 'us-east-1'
$TestAccessKey = 'AKIDEXAMPLE'
$TestSecretKey = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'

# Socket helpers in C#: moving 16 MiB through PowerShell loops would take minutes.
if (-not ('SSMConnectTests.Net' -as [type])) {
    Add-Type -TypeDefinition @'
using System;
using System.Collections.Generic;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;

namespace SSMConnectTests
{
    // A TCP server on 127.0.0.1 and a port the OS picks; each accepted connection is served by
    // Serve on its own task, and closed with the server.
    public abstract class LoopbackServer : IDisposable
    {
        private readonly TcpListener listener;
        private readonly List<TcpClient> clients = new List<TcpClient>();

        protected LoopbackServer() : this(IPAddress.Loopback)
        {
        }

        protected LoopbackServer(IPAddress address)
        {
            listener = new TcpListener(address, 0);
            listener.Start();
            Port = ((IPEndPoint)listener.LocalEndpoint).Port;
            Task.Run(AcceptLoop);
        }

        public int Port { get; private set; }

        protected abstract Task Serve(TcpClient c);

        private async Task AcceptLoop()
        {
            while (true)
            {
                TcpClient c;
                try { c = await listener.AcceptTcpClientAsync(); }
                catch (Exception) { return; }
                lock (clients) { clients.Add(c); }
                _ = Task.Run(async () => { try { await Serve(c); } catch (Exception) { } });
            }
        }

        public void Dispose()
        {
            listener.Stop();
            lock (clients) { foreach (var c in clients) c.Dispose(); }
        }
    }

    public sealed class EchoServer : LoopbackServer
    {
        protected override async Task Serve(TcpClient c)
        {
            var s = c.GetStream();
            var buf = new byte[65536];
            int n;
            while ((n = await s.ReadAsync(buf, 0, buf.Length)) > 0)
            {
                await s.WriteAsync(buf, 0, n);
            }
            c.Client.Shutdown(SocketShutdown.Send);
        }
    }

    // The shape of AWS Tools' AWSPSCredentials, which Set-AWSCredential leaves in
    // $StoredAWSCredentials (AWS.Tools.Common is not a NuGet package, so the suite cannot load it).
    public sealed class AWSPSCredentials
    {
        public object Credentials { get; set; }
        public string Name { get; set; }
    }

    // Answers every HTTP request on one connection with 200 and "ok", or the body it is given,
    // on 127.0.0.1 or the loopback address it is given (a stand-in web server).
    public sealed class HttpOkServer : LoopbackServer
    {
        private readonly string body;

        public HttpOkServer() : this("ok", IPAddress.Loopback)
        {
        }

        public HttpOkServer(string body, IPAddress address) : base(address)
        {
            this.body = body;
        }

        protected override async Task Serve(TcpClient c)
        {
            var s = c.GetStream();
            var reader = new StreamReader(s);
            string line;
            while (!string.IsNullOrEmpty(line = await reader.ReadLineAsync())) { }
            var reply = System.Text.Encoding.ASCII.GetBytes(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + body.Length + "\r\nConnection: close\r\n\r\n" + body);
            await s.WriteAsync(reply, 0, reply.Length);
            c.Client.Shutdown(SocketShutdown.Send);
        }
    }

    public static class Net
    {
        public static int FreePort()
        {
            var l = new TcpListener(IPAddress.Loopback, 0);
            l.Start();
            var port = ((IPEndPoint)l.LocalEndpoint).Port;
            l.Stop();
            return port;
        }

        public static bool Listens(int port)
        {
            using (var c = new TcpClient())
            {
                try { c.Connect(IPAddress.Loopback, port); return true; }
                catch (SocketException) { return false; }
            }
        }

        // Writes data to 127.0.0.1:port while reading the same amount back.
        public static byte[] RoundTrip(int port, byte[] data, int timeoutSeconds)
        {
            using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(timeoutSeconds)))
            using (var tcp = new TcpClient())
            {
                tcp.Connect(IPAddress.Loopback, port);
                var s = tcp.GetStream();
                var writer = Task.Run(async () =>
                {
                    for (var off = 0; off < data.Length; off += 65536)
                    {
                        await s.WriteAsync(data, off, Math.Min(65536, data.Length - off), cts.Token);
                    }
                });
                var back = new MemoryStream(data.Length);
                var buf = new byte[65536];
                while (back.Length < data.Length)
                {
                    var n = s.ReadAsync(buf, 0, buf.Length, cts.Token).GetAwaiter().GetResult();
                    if (n == 0) break;
                    back.Write(buf, 0, n);
                }
                writer.GetAwaiter().GetResult();
                return back.ToArray();
            }
        }

        // Whether a DNS server answers on 127.0.0.1:port: a query for ready.test A (REFUSED will do).
        public static bool DnsAnswers(int port)
        {
            using (var udp = new UdpClient(AddressFamily.InterNetwork))
            {
                udp.Client.ReceiveTimeout = 200;
                var query = new byte[] { 0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, (byte)'r', (byte)'e', (byte)'a', (byte)'d', (byte)'y', 4, (byte)'t', (byte)'e', (byte)'s', (byte)'t', 0, 0, 1, 0, 1 };
                try
                {
                    udp.Send(query, query.Length, new IPEndPoint(IPAddress.Loopback, port));
                    IPEndPoint from = null;
                    var reply = udp.Receive(ref from);
                    return reply.Length >= 12 && reply[0] == 0x12 && reply[1] == 0x34;
                }
                catch (SocketException) { return false; }
            }
        }

        public static byte[] RandomBytes(int count)
        {
            var b = new byte[count];
            System.Security.Cryptography.RandomNumberGenerator.Fill(b);
            return b;
        }

        public static string Sha256(byte[] data)
        {
            return Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(data));
        }
    }
}
'@
}

function Get-PwshCommand {
    <#
    .SYNOPSIS
    The command that starts this PowerShell again, as an array: pwsh itself, or the dotnet host
    and pwsh.dll when PowerShell runs as a .NET tool (dotnet pwsh).
    #>
    $path = (Get-Process -Id $PID).Path
    if ((Split-Path -Leaf $path) -match '^pwsh(\.exe)?$') { return , @($path) }
    , @($path, (Join-Path $PSHOME 'pwsh.dll'))
}

function Invoke-Pwsh {
    <# Runs a child PowerShell with the given arguments, like & pwsh @args. #>
    $command = Get-PwshCommand
    $rest = @($command | Select-Object -Skip 1)
    & $command[0] @rest @args
}

function New-PwshStartInfo {
    <#
    A ProcessStartInfo for a child PowerShell, with $ArgumentList after the command's own;
    -Redirect redirects its stdin, stdout and stderr.
    #>
    param([string[]] $ArgumentList = @(), [switch] $Redirect)
    $command = Get-PwshCommand
    $psi = [System.Diagnostics.ProcessStartInfo]::new($command[0])
    foreach ($a in @($command | Select-Object -Skip 1) + $ArgumentList) { $psi.ArgumentList.Add($a) }
    $psi.UseShellExecute = $false
    if ($Redirect) {
        $psi.RedirectStandardInput = $true
        $psi.RedirectStandardOutput = $true
        $psi.RedirectStandardError = $true
    }
    $psi
}

function New-TestTempPath {
    <# A path under the temporary directory that nothing uses yet: $Prefix and a fresh GUID. #>
    param([Parameter(Mandatory)] [string] $Prefix, [string] $Extension = '')
    Join-Path ([IO.Path]::GetTempPath()) "$Prefix-$([guid]::NewGuid().ToString('N'))$Extension"
}

function Stop-TestProcess {
    <#
    Stops a process a test started: waits up to $WaitMilliseconds for it to exit on its own when
    -Wait is given, kills it and what it started if it still runs, and disposes it.
    #>
    param([Parameter(ValueFromPipeline)] [System.Diagnostics.Process] $Process, [int] $WaitMilliseconds = 5000, [switch] $Wait)
    process {
        if (-not $Process) { return }
        try {
            if ($Wait) { $null = $Process.WaitForExit($WaitMilliseconds) }
            if (-not $Process.HasExited) {
                $Process.Kill($true)
                $null = $Process.WaitForExit($WaitMilliseconds)
            }
        }
        catch [System.InvalidOperationException] { }
        $Process.Dispose()
    }
}

function Get-PwshCommandLine {
    <# The child PowerShell command as one POSIX shell word list (for tmux and sh). #>
    $command = Get-PwshCommand
    ($command | ForEach-Object { "'" + ($_ -replace "'", "'\''") + "'" }) -join ' '
}

function Get-TestModuleManifest {
    <# The laid-out module: SSMCONNECT_MODULE_MANIFEST (set by build.ps1), else the newest under out/. #>
    if ($env:SSMCONNECT_MODULE_MANIFEST) { return $env:SSMCONNECT_MODULE_MANIFEST }
    $found = Get-ChildItem (Join-Path $RepoRoot 'out/SSMConnect') -Filter SSMConnect.psd1 -Recurse -ErrorAction SilentlyContinue |
        Sort-Object { [version]$_.Directory.Name } -Descending |
        Select-Object -First 1
    if (-not $found) { throw "no laid-out module under $RepoRoot/out/SSMConnect: run ./build.ps1 first" }
    $found.FullName
}

function Import-TestModule {
    <# Imports the laid-out module into the caller's session (not this helper module's scope). #>
    Import-Module (Get-TestModuleManifest) -Force -Global -ErrorAction Stop
}

function Get-EmulatorPath {
    if ($env:SSMCONNECT_EMULATOR) { return $env:SSMCONNECT_EMULATOR }
    $target = (& cargo metadata --format-version 1 --no-deps --manifest-path (Join-Path $RepoRoot 'Cargo.toml') | ConvertFrom-Json).target_directory
    $exe = if ($IsWindows) { 'ssm-emulator.exe' } else { 'ssm-emulator' }
    $path = Join-Path $target "debug/$exe"
    if (-not (Test-Path $path)) { throw "the emulator is not at ${path}: run cargo build -p ssm-emulator (build.ps1 -Task Test does)" }
    $path
}

function Start-Emulator {
    <#
    .SYNOPSIS
    Starts ssm-emulator on loopback; returns an object with Endpoint and AwsParameters (a splat
    for the cmdlets). -Config is written to a --config file (fields as in the emulator's Config).
    #>
    param(
        [hashtable] $Config,
        [string[]] $ArgumentList = @()
    )
    $psi = [System.Diagnostics.ProcessStartInfo]::new((Get-EmulatorPath))
    $psi.RedirectStandardInput = $true
    $psi.RedirectStandardOutput = $true
    $psi.RedirectStandardError = $true
    $psi.UseShellExecute = $false
    $configFile = $null
    if ($Config) {
        $configFile = New-TestTempPath 'ssmc-emu' -Extension '.json'
        $Config | ConvertTo-Json -Depth 10 | Set-Content -LiteralPath $configFile -Encoding utf8NoBOM
        $psi.ArgumentList.Add('--config')
        $psi.ArgumentList.Add($configFile)
    }
    foreach ($a in $ArgumentList) { $psi.ArgumentList.Add($a) }
    $process = [System.Diagnostics.Process]::Start($psi)
    # Keep stderr flowing so the emulator never blocks on a full pipe.
    $null = $process.StandardError.ReadToEndAsync()
    $readLine = $process.StandardOutput.ReadLineAsync()
    if (-not $readLine.Wait([TimeSpan]::FromSeconds(30)) -or -not $readLine.Result) {
        Stop-TestProcess $process
        throw 'the emulator printed no endpoint line'
    }
    $endpoint = ($readLine.Result | ConvertFrom-Json).endpoint
    [pscustomobject]@{
        Process       = $process
        Endpoint      = $endpoint
        ConfigFile    = $configFile
        AwsParameters = @{
            EndpointUrl = $endpoint
            Region      = $TestRegion
            AccessKey   = $TestAccessKey
            SecretKey   = $TestSecretKey
        }
    }
}

function Stop-Emulator {
    param([Parameter(ValueFromPipeline)] $Emulator)
    process {
        if (-not $Emulator) { return }
        # It exits when its stdin closes.
        try { $Emulator.Process.StandardInput.Close() } catch { }
        Stop-TestProcess $Emulator.Process -Wait -WaitMilliseconds 10000
        if ($Emulator.ConfigFile) { Remove-Item -LiteralPath $Emulator.ConfigFile -ErrorAction SilentlyContinue }
    }
}

function Start-EchoServer {
    [SSMConnectTests.EchoServer]::new()
}

function Test-PortListening([int] $Port) {
    [SSMConnectTests.Net]::Listens($Port)
}

function Wait-PortClosed {
    <# True once nothing accepts connections on 127.0.0.1:$Port (within $TimeoutSeconds). #>
    param([int] $Port, [int] $TimeoutSeconds = 5)
    $deadline = [DateTime]::UtcNow.AddSeconds($TimeoutSeconds)
    while ([SSMConnectTests.Net]::Listens($Port)) {
        if ([DateTime]::UtcNow -gt $deadline) { return $false }
        Start-Sleep -Milliseconds 50
    }
    $true
}

function Get-FreePort {
    [SSMConnectTests.Net]::FreePort()
}

function Test-SshdAvailable {
    -not $IsWindows -and (Test-Path '/usr/sbin/sshd') -and (Get-Command ssh -ErrorAction SilentlyContinue) -and (Get-Command ssh-keygen -ErrorAction SilentlyContinue)
}

function Start-TestDaemon {
    <#
    .SYNOPSIS
    A test daemon on loopback, started from a config file in a temporary directory of its own on a
    free port (tried again on another port when something else takes it first); returns Name,
    Port, Directory and Process. Stop-TestDaemon kills it and removes the directory.
    .PARAMETER Configure
    Given the port and the directory: writes the config file there and returns the arguments that
    run the daemon in the foreground from it.
    .PARAMETER ReadyPattern
    The daemon is ready once it writes a line matching this on stderr ...
    .PARAMETER ReadyProbe
    ... or once this, given the port, returns true.
    .PARAMETER Prepare
    Given the directory: makes what every attempt uses (keys, say), once.
    .PARAMETER Environment
    Variables set for the daemon.
    #>
    param(
        [Parameter(Mandatory)] [string] $Name,
        [Parameter(Mandatory)] [string] $FilePath,
        [Parameter(Mandatory)] [scriptblock] $Configure,
        [string] $ReadyPattern,
        [scriptblock] $ReadyProbe,
        [scriptblock] $Prepare,
        [hashtable] $Environment = @{},
        [int] $TimeoutSeconds = 20
    )
    if (-not (Test-Path -LiteralPath $FilePath)) { throw "$FilePath is missing: install $Name (.ci/run does)" }
    $dir = New-TestTempPath "ssmc-$Name"
    New-Item -ItemType Directory -Path $dir | Out-Null
    try {
        if ($Prepare) { & $Prepare $dir }
        $lastLog = ''
        foreach ($attempt in 1..5) {
            $port = Get-FreePort
            $psi = [System.Diagnostics.ProcessStartInfo]::new($FilePath)
            foreach ($a in (& $Configure $port $dir)) { $psi.ArgumentList.Add($a) }
            foreach ($e in $Environment.GetEnumerator()) { $psi.Environment[$e.Key] = [string]$e.Value }
            $psi.RedirectStandardInput = $true
            $psi.RedirectStandardError = $true
            $psi.UseShellExecute = $false
            $process = [System.Diagnostics.Process]::Start($psi)
            $log = [System.Text.StringBuilder]::new()
            $deadline = [DateTime]::UtcNow.AddSeconds($TimeoutSeconds)
            $ready = $false
            if ($ReadyPattern) {
                while (-not $ready -and [DateTime]::UtcNow -lt $deadline) {
                    $line = $process.StandardError.ReadLineAsync()
                    $left = [int][Math]::Max(0, ($deadline - [DateTime]::UtcNow).TotalMilliseconds)
                    if (-not $line.Wait($left) -or $null -eq $line.Result) { break }
                    $null = $log.AppendLine($line.Result)
                    $ready = $line.Result -match $ReadyPattern
                }
                # Keep stderr flowing so that the daemon never blocks on a full pipe.
                if ($ready) { $null = $process.StandardError.ReadToEndAsync() }
            }
            else {
                $stderr = $process.StandardError.ReadToEndAsync()
                while (-not $ready -and -not $process.HasExited -and [DateTime]::UtcNow -lt $deadline) {
                    $ready = & $ReadyProbe $port
                    if (-not $ready) { Start-Sleep -Milliseconds 50 }
                }
                if (-not $ready -and $process.HasExited) { $null = $log.Append($stderr.Result) }
            }
            if ($ready) {
                return [pscustomobject]@{ Name = $Name; Port = $port; Directory = $dir; Process = $process }
            }
            # Most likely it lost the port to another process: try another one.
            $lastLog = $log.ToString()
            Stop-TestProcess $process
        }
        throw "$Name did not start: $lastLog"
    }
    catch {
        Remove-Item -LiteralPath $dir -Recurse -Force -ErrorAction SilentlyContinue
        throw
    }
}

function Stop-TestDaemon {
    <# Kills a daemon of Start-TestDaemon (Start-TestSshd, Start-TestDnsmasq) and removes its directory. #>
    param([Parameter(ValueFromPipeline)] $Daemon)
    process {
        if (-not $Daemon) { return }
        Stop-TestProcess $Daemon.Process
        Remove-Item -LiteralPath $Daemon.Directory -Recurse -Force -ErrorAction SilentlyContinue
    }
}

function Start-TestSshd {
    <#
    .SYNOPSIS
    A private sshd on 127.0.0.1 accepting a fresh client key; returns Port, ClientKey, Directory,
    Process (stop it with Stop-TestDaemon). -AuthorizedKeysFile replaces the file holding that key
    (e.g. the emulator's EC2 Instance Connect file); -ExtraAuthorizedKeysFile is read besides it.
    -TrustedUserCAKeys names a CA public key whose user certificates sshd accepts.
    #>
    param([string] $AuthorizedKeysFile, [string] $ExtraAuthorizedKeysFile, [string] $TrustedUserCAKeys)
    # sshd refuses to start without its privilege-separation directory.
    if (-not (Test-Path /run/sshd) -and (Test-Path /run)) { New-Item -ItemType Directory -Path /run/sshd -ErrorAction SilentlyContinue | Out-Null }
    $sshd = Start-TestDaemon -Name sshd -FilePath '/usr/sbin/sshd' -ReadyPattern 'Server listening on' -Prepare {
        param($Directory)
        foreach ($key in 'host_ed25519', 'id_ed25519') {
            & ssh-keygen -q -t ed25519 -N '' -f (Join-Path $Directory $key)
            if ($LASTEXITCODE -ne 0) { throw "ssh-keygen failed for $key" }
        }
        if (-not $AuthorizedKeysFile) { Copy-Item (Join-Path $Directory 'id_ed25519.pub') (Join-Path $Directory 'authorized_keys') }
    } -Configure {
        param($Port, $Directory)
        $authorized = if ($AuthorizedKeysFile) { $AuthorizedKeysFile } else { Join-Path $Directory 'authorized_keys' }
        $cfg = Join-Path $Directory 'sshd_config'
        @(
            'ListenAddress 127.0.0.1'
            "Port $Port"
            "HostKey $(Join-Path $Directory 'host_ed25519')"
            "PidFile $(Join-Path $Directory 'sshd.pid')"
            "AuthorizedKeysFile $authorized $ExtraAuthorizedKeysFile".TrimEnd()
            'StrictModes no'
            'UsePAM no'
            'PasswordAuthentication no'
            'KbdInteractiveAuthentication no'
            'PermitRootLogin prohibit-password'
            if ($TrustedUserCAKeys) { "TrustedUserCAKeys $TrustedUserCAKeys" }
        ) | Set-Content -LiteralPath $cfg
        '-D', '-e', '-f', $cfg
    }
    $sshd | Add-Member -NotePropertyName ClientKey -NotePropertyValue (Join-Path $sshd.Directory 'id_ed25519') -PassThru
}

function Start-TestDnsmasq {
    <#
    .SYNOPSIS
    dnsmasq on 127.0.0.1 as a small internal resolver: the given records (dnsmasq options such as
    --address=/web.test/10.0.0.10), no upstream and no --local, so every name and type it has no
    record for is answered REFUSED. Returns Port, Address (as -DnsServer takes it), Directory,
    Process; stop it with Stop-TestDaemon.
    #>
    param([Parameter(Mandatory)] [string[]] $Record)
    $path = if (Test-Path /usr/sbin/dnsmasq) { '/usr/sbin/dnsmasq' } else { '/usr/bin/dnsmasq' }
    $dns = Start-TestDaemon -Name dnsmasq -FilePath $path -TimeoutSeconds 10 -ReadyProbe {
        param($Port)
        [SSMConnectTests.Net]::DnsAnswers($Port)
    } -Configure {
        param($Port, $Directory)
        $conf = Join-Path $Directory 'dnsmasq.conf'
        @(
            "port=$Port"
            'listen-address=127.0.0.1'
            'bind-interfaces'
            'no-resolv'
            'no-hosts'
            'no-poll'
            'cache-size=0'
            "pid-file=$(Join-Path $Directory 'dnsmasq.pid')"
            # As root it would switch to `nobody`; staying root changes nothing it reads.
            if ((id -u) -eq '0') { 'user=root' }
            $Record | ForEach-Object { $_.TrimStart('-') }
        ) | Set-Content -LiteralPath $conf
        '--no-daemon', "--conf-file=$conf"
    }
    $dns | Add-Member -NotePropertyName Address -NotePropertyValue "127.0.0.1:$($dns.Port)" -PassThru
}

function Start-TestMoto {
    <#
    .SYNOPSIS
    moto's server (AWS services as moto answers them: here KMS) on a free 127.0.0.1 port. Returns
    Port, Endpoint, Directory, Process; stop it with Stop-TestDaemon.
    .PARAMETER FreeRequests
    When given, moto checks every request after this many as AWS does: signed by an access key
    of one of its IAM users and allowed by that user's policy (its INITIAL_NO_AUTH_ACTION_COUNT).
    #>
    param([int] $FreeRequests = -1)
    $python = (Get-Command python3 -ErrorAction SilentlyContinue).Source
    if (-not $python) { throw 'python3 with moto[server] is needed (.ci/run has it)' }
    $environment = if ($FreeRequests -ge 0) { @{ INITIAL_NO_AUTH_ACTION_COUNT = $FreeRequests } } else { @{} }
    $moto = Start-TestDaemon -Name moto -FilePath $python -TimeoutSeconds 60 -Environment $environment -ReadyProbe {
        param($Port)
        Test-PortListening $Port
    } -Configure {
        param($Port, $Directory)
        '-m', 'moto.server', '-H', '127.0.0.1', '-p', "$Port"
    }
    $moto | Add-Member -NotePropertyName Endpoint -NotePropertyValue "http://127.0.0.1:$($moto.Port)" -PassThru
}

function New-TestKmsKey {
    <# A new symmetric KMS key in a moto of Start-TestMoto (test region); returns its key id. #>
    param([Parameter(Mandatory)] $Moto)
    $answer = Invoke-RestMethod -Method Post -Uri $Moto.Endpoint -ContentType 'application/x-amz-json-1.1' `
        -Headers @{
        'X-Amz-Target'  = 'TrentService.CreateKey'
        # moto serves every service on one port and routes by the credential scope.
        'Authorization' = 'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=0'
    } -Body '{"Description":"SSMConnect test"}'
    if (-not $answer.KeyMetadata.KeyId) { throw "CreateKey returned no key id: $($answer | ConvertTo-Json -Depth 5)" }
    $answer.KeyMetadata.KeyId
}

function New-TestIamUser {
    <#
    An IAM user in a moto of Start-TestMoto whose only policy is $Policy (a policy document as a
    hashtable); returns its AccessKey and SecretKey. Three requests.
    #>
    param([Parameter(Mandatory)] $Moto, [Parameter(Mandatory)] [string] $Name, [Parameter(Mandatory)] [hashtable] $Policy)
    $headers = @{ 'Authorization' = 'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0' }
    $call = {
        param([hashtable] $Form)
        $Form.Version = '2010-05-08'
        Invoke-RestMethod -Method Post -Uri $Moto.Endpoint -Headers $headers -Body $Form -ContentType 'application/x-www-form-urlencoded'
    }
    $null = & $call @{ Action = 'CreateUser'; UserName = $Name }
    $null = & $call @{ Action = 'PutUserPolicy'; UserName = $Name; PolicyName = 'only'; PolicyDocument = ($Policy | ConvertTo-Json -Depth 8 -Compress) }
    $answer = & $call @{ Action = 'CreateAccessKey'; UserName = $Name }
    $key = $answer.CreateAccessKeyResponse.CreateAccessKeyResult.AccessKey
    if (-not $key.AccessKeyId) { throw "CreateAccessKey returned no key: $($answer.OuterXml)" }
    [pscustomobject]@{ AccessKey = $key.AccessKeyId; SecretKey = $key.SecretAccessKey }
}

function Start-ForwardTestBed {
    <#
    .SYNOPSIS
    What the port-forward tests share: imports the module, starts the emulator (with -Config and
    -ArgumentList as Start-Emulator takes them) and an echo server. Returns the emulator and the
    echo server, in that order; Stop-ForwardTestBed stops them and every forward.
    #>
    param([hashtable] $Config, [string[]] $ArgumentList = @())
    Import-TestModule
    Start-Emulator -Config $Config -ArgumentList $ArgumentList
    Start-EchoServer
}

function Stop-ForwardTestBed {
    <# Stops every forward, then the echo server and the emulator of Start-ForwardTestBed. #>
    param($Emulator, $Echo)
    if (Get-Command Get-SSMPortForward -ErrorAction SilentlyContinue) { Get-SSMPortForward | Stop-SSMPortForward }
    if ($Echo) { $Echo.Dispose() }
    Stop-Emulator $Emulator
}

function Get-TestSshArguments {
    <# ssh options for a throwaway loopback sshd: no config files, no prompts, stdin from /dev/null. #>
    @(
        '-n'
        '-F', '/dev/null'
        '-o', 'StrictHostKeyChecking=no'
        '-o', 'UserKnownHostsFile=/dev/null'
        '-o', 'BatchMode=yes'
        '-o', 'IdentitiesOnly=yes'
        '-o', 'LogLevel=ERROR'
    )
}

function Get-EmulatorSession {
    <# The sessions the emulator has seen (GET /_emulator/sessions). #>
    param([Parameter(Mandatory)] $Emulator)
    # One object per session: Invoke-RestMethod writes the JSON array as one object.
    foreach ($session in Invoke-RestMethod -Uri "$($Emulator.Endpoint.TrimEnd('/'))/_emulator/sessions" -NoProxy) { $session }
}

function Wait-Until {
    <# Polls $Condition until it is true; false after $TimeoutSeconds. #>
    param([Parameter(Mandatory)] [scriptblock] $Condition, [int] $TimeoutSeconds = 20)
    $deadline = [DateTime]::UtcNow.AddSeconds($TimeoutSeconds)
    while (-not (& $Condition)) {
        if ([DateTime]::UtcNow -gt $deadline) { return $false }
        Start-Sleep -Milliseconds 100
    }
    $true
}

function Invoke-ChildPwsh {
    <#
    .SYNOPSIS
    Runs $ScriptBlock in a child pwsh with string arguments and extra environment variables
    (without those whose names match $RemoveEnvironment, wildcards allowed), its stdin holding
    $InputText (else empty); returns ExitCode, Output (stdout lines) and Errors (stderr text).
    .DESCRIPTION
    On Linux and macOS a variable set in this session ($env:X = ...) is invisible to the native
    library loaded in this process (.NET keeps its own copy of the environment), while a child
    process does get it. Tests that need the native library to see a variable run in a child.
    #>
    param(
        [Parameter(Mandatory)] [scriptblock] $ScriptBlock,
        [string[]] $ArgumentList = @(),
        [hashtable] $Environment = @{},
        [string[]] $RemoveEnvironment = @(),
        [string] $InputText,
        [int] $TimeoutSeconds = 120
    )
    $file = New-TestTempPath 'ssmc-child' -Extension '.ps1'
    Set-Content -LiteralPath $file -Value $ScriptBlock.ToString() -Encoding utf8NoBOM
    try {
        $psi = New-PwshStartInfo -Redirect -ArgumentList (@('-NoProfile', '-NonInteractive', '-File', $file) + $ArgumentList)
        foreach ($pattern in $RemoveEnvironment) {
            foreach ($name in @($psi.Environment.Keys | Where-Object { $_ -like $pattern })) { $null = $psi.Environment.Remove($name) }
        }
        foreach ($name in $Environment.Keys) { $psi.Environment[$name] = [string]$Environment[$name] }
        $p = [System.Diagnostics.Process]::Start($psi)
        if ($InputText) { $p.StandardInput.Write($InputText) }
        $p.StandardInput.Close()
        $stdout = $p.StandardOutput.ReadToEndAsync()
        $stderr = $p.StandardError.ReadToEndAsync()
        if (-not $p.WaitForExit($TimeoutSeconds * 1000)) {
            Stop-TestProcess $p
            throw "the child pwsh did not finish in $TimeoutSeconds s"
        }
        [pscustomobject]@{
            ExitCode = $p.ExitCode
            Output   = @($stdout.Result -split '\r?\n' | Where-Object { $_ -ne '' })
            Errors   = $stderr.Result
        }
        $p.Dispose()
    }
    finally {
        Remove-Item -LiteralPath $file -ErrorAction SilentlyContinue
    }
}

function Import-TestAwsSdk {
    <#
    .SYNOPSIS
    Loads AWSSDK.Core and AWSSDK.EC2 (the assemblies AWS Tools for PowerShell ships) from the paths
    build.ps1 restored from NuGet and put in SSMCONNECT_TEST_AWSSDK.
    #>
    if ('Amazon.EC2.AmazonEC2Client' -as [type]) { return }
    if (-not $env:SSMCONNECT_TEST_AWSSDK) {
        throw 'SSMCONNECT_TEST_AWSSDK names no AWS SDK assemblies: run the suite through ./build.ps1 -Task Test'
    }
    foreach ($path in $env:SSMCONNECT_TEST_AWSSDK -split [IO.Path]::PathSeparator) {
        Add-Type -LiteralPath $path
    }
}

function Get-TestEC2Instance {
    <#
    .SYNOPSIS
    What AWS Tools' Get-EC2Instance returns: Amazon.EC2.Model.Reservation objects, from
    DescribeInstances through the real AmazonEC2Client against the emulator's EC2 endpoint.
    .PARAMETER Filter
    Hashtables with Name and Values, as Get-EC2Instance -Filter takes them.
    #>
    param(
        [Parameter(Mandatory)] [string] $Endpoint,
        [object[]] $InstanceId,
        [hashtable[]] $Filter
    )
    Import-TestAwsSdk
    $config = [Amazon.EC2.AmazonEC2Config]::new()
    $config.ServiceURL = $Endpoint
    $config.AuthenticationRegion = $TestRegion
    $client = [Amazon.EC2.AmazonEC2Client]::new([Amazon.Runtime.BasicAWSCredentials]::new($TestAccessKey, $TestSecretKey), $config)
    try {
        $request = [Amazon.EC2.Model.DescribeInstancesRequest]::new()
        if ($InstanceId) {
            $request.InstanceIds = [System.Collections.Generic.List[string]]::new([string[]]$InstanceId)
        }
        if ($Filter) {
            $request.Filters = [System.Collections.Generic.List[Amazon.EC2.Model.Filter]]::new()
            foreach ($f in $Filter) {
                $request.Filters.Add([Amazon.EC2.Model.Filter]::new($f.Name, [System.Collections.Generic.List[string]]::new([string[]]$f.Values)))
            }
        }
        $response = $client.DescribeInstancesAsync($request).GetAwaiter().GetResult()
        # Get-EC2Instance writes the reservations one by one.
        foreach ($r in $response.Reservations) { $r }
    }
    finally {
        $client.Dispose()
    }
}

function New-TestAwsFiles {
    <#
    .SYNOPSIS
    A temporary shared credentials file and config file with the profiles the credential tests
    use; returns Directory, CredentialsFile, ConfigFile and the access key each profile holds.
    #>
    $dir = New-TestTempPath 'ssmc-aws'
    New-Item -ItemType Directory -Path $dir | Out-Null
    $keys = [ordered]@{ default = 'AKIDDEFAULTPROFILE'; ops = 'AKIDOPSPROFILE'; prod = 'AKIDPRODPROFILE' }
    $credentials = Join-Path $dir 'credentials'
    $config = Join-Path $dir 'config'
    $keys.Keys | ForEach-Object {
        "[$_]"
        "aws_access_key_id = $($keys[$_])"
        "aws_secret_access_key = secret-of-$_"
        ''
    } | Set-Content -LiteralPath $credentials
    @(
        '[default]', 'region = eu-central-1', ''
        '[profile ops]', 'region = ap-southeast-2', ''
        '[profile prod]', "region = $TestRegion", ''
    ) | Set-Content -LiteralPath $config
    [pscustomobject]@{ Directory = $dir; CredentialsFile = $credentials; ConfigFile = $config; Keys = $keys }
}

Export-ModuleMember -Function * -Variable TestRegion, TestAccessKey, TestSecretKey

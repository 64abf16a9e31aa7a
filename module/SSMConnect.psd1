@{
    # The binary module assembly; the native library and the ssmconnect helper sit under
    # bin/runtimes/<rid>/native/ (laid out by build.ps1).
    RootModule           = 'bin/SSMConnect.dll'
    ModuleVersion        = '0.1.0'
    CompatiblePSEditions = @('Core')
    GUID                 = '54d06be8-1eaf-4fc3-a45d-482d3aecca55'
    Author               = 'SSMConnect contributors'
    CompanyName          = 'SSMConnect contributors'
    Copyright            = '(c) SSMConnect contributors. MIT OR Apache-2.0.'
    Description          = 'AWS Systems Manager Session Manager sessions without the AWS CLI or session-manager-plugin: interactive shells, commands with their output in the pipeline, port forwarding and SSH over SSM to EC2 instances and managed nodes.'
    PowerShellVersion    = '7.4'
    # Loaded before the root module, so that its types resolve whatever the assembly probing does.
    RequiredAssemblies   = @('bin/SSMConnect.Core.dll')
    FormatsToProcess     = @('SSMConnect.Format.ps1xml')

    # Explicit lists: PowerShell can then tell what the module exports without loading it.
    CmdletsToExport      = @(
        'Start-SSMShellSession'
        'Start-SSMPortForward'
        'Start-SSMSshSession'
        'Start-SSMRdpSession'
        'Get-SSMPortForward'
        'Stop-SSMPortForward'
        'Invoke-SSMSessionCommand'
        'Get-SSMConnectHelperPath'
    )
    FunctionsToExport    = @()
    VariablesToExport    = @()
    AliasesToExport      = @()

    PrivateData          = @{
        PSData = @{
            Tags       = @('AWS', 'SSM', 'SessionManager', 'EC2', 'SSH', 'PortForwarding', 'PSEdition_Core', 'Windows', 'Linux', 'MacOS')
            ProjectUri = 'https://github.com/ssmconnect/ssmconnect'
        }
    }
}

<#
.SYNOPSIS
Registers a Windows scheduled task that runs `embedgen run` on a schedule (nightly by default).

.DESCRIPTION
Registers (or re-registers: an existing task of the same name is removed first, so
running this twice is safe) a scheduled task that runs the virtual environment's
embedgen.exe:

    embedgen.exe run <Input> --output <Output> --config <Config>
        --log-file <LogDir>\embedgen-{date}.log
        --report <LogDir>\embedgen-{date}.report.json --keep-reports <KeepReports>

embedgen expands {date} in --log-file and --report to the run's date (YYYY-MM-DD), so each
run writes its own log file (rotated at 10 MB) and its own JSON report (docs/report.md),
written on success and on failure; only the newest <KeepReports> reports are kept. The task's "Last Run Result" is
embedgen's exit code:

    0 (0x0) done                      3 (0x3) stopped on budget
    1 (0x1) failed                    4 (0x4) finished, some documents skipped
    2 (0x2) bad usage or config       5 (0x5) another run holds the output lock
    6 (0x6) batch jobs submitted (mode = "batch", run --no-wait); the next run collects

The task runs whether or not the user is logged on. Choose how with -LogonType:

  S4U             (default) Runs as you without storing a password. It has NO network
                  credentials: inputs or outputs on network shares (\\server\share)
                  fail with "access denied". Local files only.
  Password        Runs as the -Credential user with its password stored (encrypted) by
                  Task Scheduler: network shares work. Re-register after a password
                  change, or the task fails to start.
  ServiceAccount  Runs as a built-in account (-ServiceAccount, default
                  NT AUTHORITY\NETWORK SERVICE) without a password. It reaches network
                  shares as the computer account (DOMAIN\COMPUTER$), so grant that
                  account access to the share. It cannot read your profile: install
                  with -VenvPath C:\ProgramData\embedgen\venv, keep the config, model
                  and output outside %LOCALAPPDATA%, set the model with an absolute
                  model_path, and set [run] cache_dir in the config.

Task settings: StartWhenAvailable (a run missed while the machine was off starts when
it is back), MultipleInstances IgnoreNew (never two runs at once; embedgen's output
lock is a second guard), ExecutionTimeLimit (Task Scheduler stops a run that takes
longer; the next run resumes from the cache), RestartCount / RestartInterval (retries
when the task fails to start; a run that exits with an error code is not restarted).

Run from an elevated PowerShell (S4U and ServiceAccount need it).

.PARAMETER Input
The corpus to embed: a Parquet or JSONL file, a folder, or a glob.

.PARAMETER Output
The output Parquet file. Default: <input stem>.embeddings.parquet beside the input.

.PARAMETER Config
The config file. Default: %LOCALAPPDATA%\embedgen\windows_config.toml, created from
configs\windows_config.toml (beside this script's folder) when it does not exist.

.PARAMETER At
Time of day to run, e.g. 02:00 (the default).

.PARAMETER Daily
Run every day (the default when neither -Daily nor -Weekly is given).

.PARAMETER Weekly
Run weekly on -DaysOfWeek.

.PARAMETER DaysOfWeek
Days for -Weekly, e.g. Monday,Thursday.

.PARAMETER LogonType
S4U (default), Password or ServiceAccount; see the description for the trade-offs.

.PARAMETER Credential
The user and password for -LogonType Password. Prompted for when not given.

.PARAMETER ServiceAccount
The account for -LogonType ServiceAccount. Default: NT AUTHORITY\NETWORK SERVICE.

.PARAMETER TaskName
Name of the task. Default: "embedgen nightly".

.PARAMETER TaskPath
Task Scheduler folder of the task. Default: \ (the root).

.PARAMETER VenvPath
The virtual environment made by Install-Embedgen.ps1. Default: %LOCALAPPDATA%\embedgen\venv.

.PARAMETER LogDir
Folder for the dated log files. Default: %LOCALAPPDATA%\embedgen\logs.

.PARAMETER KeepReports
How many of the newest JSON run reports to keep beside the logs. Default: 30.

.PARAMETER ExecutionTimeLimit
Longest a run may take before Task Scheduler stops it. Default: 12 hours.

.PARAMETER RestartCount
How many times to retry when the task fails to start. Default: 3.

.PARAMETER RestartInterval
Wait between those retries. Default: 10 minutes.

.PARAMETER SkipDoctor
Do not run `embedgen doctor` on the config before registering.

.EXAMPLE
.\windows\Register-EmbedgenTask.ps1 -Input D:\corpus\docs.parquet -Output D:\corpus\docs.embeddings.parquet

Runs every night at 02:00 as you (S4U) with the default config.

.EXAMPLE
.\windows\Register-EmbedgenTask.ps1 -Input \\files\corpus -Output \\files\out\corpus.parquet -LogonType Password -Weekly -DaysOfWeek Monday,Thursday -At 23:30

Runs twice a week with your stored password, so the network share is reachable.

.EXAMPLE
.\windows\Register-EmbedgenTask.ps1 -Input D:\corpus\docs.parquet -WhatIf

Shows what would be registered, changing nothing.
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    [Parameter(Mandatory = $true)]
    [Alias('Input')]
    [string]$InputPath,

    [string]$Output = '',

    [string]$Config = (Join-Path $env:LOCALAPPDATA 'embedgen\windows_config.toml'),

    [ValidatePattern('^([01]?\d|2[0-3]):[0-5]\d$')]
    [string]$At = '02:00',

    [switch]$Daily,

    [switch]$Weekly,

    [ValidateSet('Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday')]
    [string[]]$DaysOfWeek = @(),

    [ValidateSet('S4U', 'Password', 'ServiceAccount')]
    [string]$LogonType = 'S4U',

    [System.Management.Automation.PSCredential]$Credential,

    [string]$ServiceAccount = 'NT AUTHORITY\NETWORK SERVICE',

    [string]$TaskName = 'embedgen nightly',

    [string]$TaskPath = '\',

    [string]$VenvPath = (Join-Path $env:LOCALAPPDATA 'embedgen\venv'),

    [string]$LogDir = (Join-Path $env:LOCALAPPDATA 'embedgen\logs'),

    [ValidateRange(1, 9999)]
    [int]$KeepReports = 30,

    [timespan]$ExecutionTimeLimit = (New-TimeSpan -Hours 12),

    [ValidateRange(0, 999)]
    [int]$RestartCount = 3,

    [timespan]$RestartInterval = (New-TimeSpan -Minutes 10),

    [switch]$SkipDoctor
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$Embedgen = Join-Path $VenvPath 'Scripts\embedgen.exe'
$Template = Join-Path (Split-Path -Parent $PSScriptRoot) 'configs\windows_config.toml'

function ConvertTo-ArgumentString {
    # One Windows command line from arguments, quoted the way the C runtime splits it.
    param([string[]]$Arguments)
    $quoted = foreach ($a in $Arguments) {
        if ($a -and $a -notmatch '[\s"]') { $a; continue }
        $escaped = $a -replace '(\\*)"', '$1$1\"' -replace '(\\+)$', '$1$1'
        '"' + $escaped + '"'
    }
    return ($quoted -join ' ')
}

function Resolve-FullPath {
    param([string]$Path)
    return $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($Path)
}

if ($Daily -and $Weekly) { throw 'Use -Daily or -Weekly, not both' }
if ($Weekly -and $DaysOfWeek.Count -eq 0) { throw '-Weekly needs -DaysOfWeek, e.g. -DaysOfWeek Monday,Thursday' }
if (-not $Weekly -and $DaysOfWeek.Count -gt 0) { throw '-DaysOfWeek needs -Weekly' }
if (-not (Test-Path -LiteralPath $Embedgen) -and -not $WhatIfPreference) {
    throw "embedgen is not installed in $VenvPath; run Install-Embedgen.ps1 first (or pass -VenvPath)"
}
if ($LogonType -eq 'ServiceAccount' -and $VenvPath.StartsWith($env:LOCALAPPDATA, [StringComparison]::OrdinalIgnoreCase)) {
    Write-Warning "$ServiceAccount cannot read $VenvPath in your profile; install with -VenvPath C:\ProgramData\embedgen\venv"
}

# The config: the default one is created from the template on first use.
if (-not (Test-Path -LiteralPath $Config)) {
    if ($PSBoundParameters.ContainsKey('Config')) { throw "Config file not found: $Config" }
    if (-not (Test-Path -LiteralPath $Template)) {
        throw "No config at $Config and no template at $Template; pass -Config"
    }
    if ($PSCmdlet.ShouldProcess($Config, "Create from $Template")) {
        New-Item -ItemType Directory -Force -Path (Split-Path -Parent $Config) | Out-Null
        Copy-Item -LiteralPath $Template -Destination $Config
        Write-Host "Created ${Config}: edit model_path and device there if needed"
    }
}
# Absolute paths (relative to this PowerShell location): the task starts elsewhere.
$Config = Resolve-FullPath $Config
$InputPath = Resolve-FullPath $InputPath
if ($Output) { $Output = Resolve-FullPath $Output }
$LogDir = Resolve-FullPath $LogDir
if ($PSCmdlet.ShouldProcess($LogDir, 'Create the log folder')) {
    New-Item -ItemType Directory -Force -Path $LogDir | Out-Null
}

# A preflight check with the task's config; problems are reported, not fatal.
if (-not $SkipDoctor -and -not $WhatIfPreference) {
    $outDir = Split-Path -Parent $InputPath
    if ($Output) { $outDir = Split-Path -Parent $Output }
    & $Embedgen doctor --config $Config --output-dir $outDir
    if ($LASTEXITCODE -ne 0) {
        Write-Warning "embedgen doctor reported failures (exit code $LASTEXITCODE); the task may fail until they are fixed"
    }
}

# What the task runs.
$LogFile = Join-Path $LogDir 'embedgen-{date}.log'
# No --quiet: the task has no console, and progress lines go to the log file.
$ReportFile = Join-Path $LogDir 'embedgen-{date}.report.json'
$EmbedgenArgs = @('run', $InputPath, '--config', $Config, '--log-file', $LogFile,
    '--report', $ReportFile, '--keep-reports', "$KeepReports")
if ($Output) { $EmbedgenArgs += @('--output', $Output) }
$action = New-ScheduledTaskAction -Execute $Embedgen -Argument (ConvertTo-ArgumentString $EmbedgenArgs) `
    -WorkingDirectory (Split-Path -Parent $VenvPath)

if ($Weekly) {
    $trigger = New-ScheduledTaskTrigger -Weekly -DaysOfWeek $DaysOfWeek -At $At
}
else {
    $trigger = New-ScheduledTaskTrigger -Daily -At $At
}

$settings = New-ScheduledTaskSettingsSet -StartWhenAvailable -MultipleInstances IgnoreNew `
    -ExecutionTimeLimit $ExecutionTimeLimit -RestartCount $RestartCount -RestartInterval $RestartInterval `
    -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries

$description = "embedgen run of $InputPath (registered by Register-EmbedgenTask.ps1; logs in $LogDir)"
$register = @{
    TaskName    = $TaskName
    TaskPath    = $TaskPath
    Action      = $action
    Trigger     = $trigger
    Settings    = $settings
    Description = $description
}
switch ($LogonType) {
    'Password' {
        if (-not $Credential) {
            $Credential = Get-Credential -UserName "$env:USERDOMAIN\$env:USERNAME" -Message 'Password for the embedgen task'
        }
        $register.User = $Credential.UserName
        $register.Password = $Credential.GetNetworkCredential().Password
        $register.RunLevel = 'Limited'
    }
    'S4U' {
        $register.Principal = New-ScheduledTaskPrincipal -UserId "$env:USERDOMAIN\$env:USERNAME" -LogonType S4U -RunLevel Limited
    }
    'ServiceAccount' {
        $register.Principal = New-ScheduledTaskPrincipal -UserId $ServiceAccount -LogonType ServiceAccount -RunLevel Limited
    }
}

# Re-registering: remove the old task first.
$existing = Get-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -ErrorAction SilentlyContinue
if ($existing -and $PSCmdlet.ShouldProcess("$TaskPath$TaskName", 'Unregister the existing task')) {
    Unregister-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -Confirm:$false
}
$when = 'daily'
if ($Weekly) { $when = "on $($DaysOfWeek -join ', ')" }
if ($PSCmdlet.ShouldProcess("$TaskPath$TaskName", "Register: $Embedgen $(ConvertTo-ArgumentString $EmbedgenArgs), $when at $At as $LogonType")) {
    Register-ScheduledTask @register | Out-Null
    Write-Host "Registered '$TaskName': runs $when at $At ($LogonType)."
    Write-Host "Logs:        $LogDir\embedgen-YYYY-MM-DD.log"
    Write-Host "Reports:     $LogDir\embedgen-YYYY-MM-DD.report.json (the newest $KeepReports)"
    Write-Host "Run it now:  Start-ScheduledTask -TaskName '$TaskName' -TaskPath '$TaskPath'"
    Write-Host "Last result: Get-ScheduledTaskInfo -TaskName '$TaskName' -TaskPath '$TaskPath'"
    Write-Host "Remove it:   .\windows\Unregister-EmbedgenTask.ps1 -TaskName '$TaskName'"
}

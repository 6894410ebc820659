<#
.SYNOPSIS
Installs embedgen into a virtual environment with one onnxruntime flavour (DirectML, CUDA or CPU).

.DESCRIPTION
Creates a Python virtual environment (default under %LOCALAPPDATA%\embedgen), installs
embedgen into it with the onnxruntime package for the chosen accelerator, and ends
with `embedgen doctor`.

onnxruntime, onnxruntime-gpu and onnxruntime-directml all install the same Python
module, `onnxruntime`; with more than one installed, whichever was installed last
wins and the others' providers disappear (a DirectML box silently runs on CPU).
embedgen itself depends on plain onnxruntime, so for DirectML and CUDA this script:

  1. uninstalls every onnxruntime distribution,
  2. installs embedgen with the `directml` or `gpu` extra (this pulls in plain
     onnxruntime too),
  3. uninstalls plain onnxruntime (which also deletes files the flavour shares with it),
  4. force-reinstalls the flavour (no dependencies) to put those files back,

and then checks that exactly one onnxruntime distribution is installed. `pip check`
will then say that embedgen requires onnxruntime: that is expected, the flavour
provides it. Re-run this script after upgrading embedgen with pip.

The script is idempotent: run it again to repair or upgrade an installation. It
also copies the Windows scripts and the default config template next to the
virtual environment (<parent of VenvPath>\windows and \configs), which is where
Register-EmbedgenTask.ps1 and `embedgen schedule print` look for them.

.PARAMETER Accelerator
DirectML (any DirectX 12 GPU: AMD, Intel, NVIDIA; the default), CUDA (NVIDIA with
the CUDA and cuDNN libraries onnxruntime-gpu needs) or CPU.

.PARAMETER VenvPath
Folder of the virtual environment. Default: %LOCALAPPDATA%\embedgen\venv. For a
scheduled task that runs as a service account, use a folder that account can read,
such as C:\ProgramData\embedgen\venv.

.PARAMETER Source
What to install: a folder (an embedgen checkout) or a pip requirement such as
`embedgen==0.1.0`. Default: the checkout this script is in (the parent of its folder).

.PARAMETER Python
The Python (3.10 or newer) to create the virtual environment with. Default: the
`py` launcher's newest Python 3, else `python` on PATH.

.PARAMETER Model
A model to download after installing (for example bge-m3), with `embedgen download`.

.PARAMETER SkipDoctor
Do not run `embedgen doctor` at the end.

.EXAMPLE
.\windows\Install-Embedgen.ps1

Installs embedgen with onnxruntime-directml into %LOCALAPPDATA%\embedgen\venv.

.EXAMPLE
.\windows\Install-Embedgen.ps1 -Accelerator DirectML -Model bge-m3

Installs embedgen for DirectML and downloads bge-m3 (the model windows_config.toml uses).

.EXAMPLE
.\windows\Install-Embedgen.ps1 -Accelerator CPU -WhatIf

Shows what would be done, changing nothing.
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    [ValidateSet('DirectML', 'CUDA', 'CPU')]
    [string]$Accelerator = 'DirectML',

    [string]$VenvPath = (Join-Path $env:LOCALAPPDATA 'embedgen\venv'),

    [string]$Source = (Split-Path -Parent $PSScriptRoot),

    [string]$Python = '',

    [string]$Model = '',

    [switch]$SkipDoctor
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$OrtPackages = @('onnxruntime', 'onnxruntime-gpu', 'onnxruntime-directml', 'onnxruntime-openvino')
$Flavour = @{ DirectML = 'onnxruntime-directml'; CUDA = 'onnxruntime-gpu'; CPU = 'onnxruntime' }[$Accelerator]
$Extra = @{ DirectML = 'directml'; CUDA = 'gpu'; CPU = '' }[$Accelerator]
$HomeDir = Split-Path -Parent $VenvPath
$VenvPython = Join-Path $VenvPath 'Scripts\python.exe'
$Embedgen = Join-Path $VenvPath 'Scripts\embedgen.exe'

function Invoke-Native {
    # Runs a program and stops the script when it exits non-zero.
    param([string]$What, [string]$Program, [string[]]$Arguments)
    Write-Verbose "$Program $($Arguments -join ' ')"
    & $Program @Arguments
    if ($LASTEXITCODE -ne 0) {
        throw "$What failed (exit code $LASTEXITCODE): $Program $($Arguments -join ' ')"
    }
}

function Find-Python {
    if ($Python) { return @($Python) }
    if (Get-Command py -ErrorAction SilentlyContinue) { return @('py', '-3') }
    if (Get-Command python -ErrorAction SilentlyContinue) { return @('python') }
    throw 'No Python found: install Python 3.10 or newer from python.org, or pass -Python C:\path\to\python.exe'
}

function Get-InstallSpec {
    # "C:\src\embedgen[directml]" for a folder, "embedgen[directml]==0.1.0" for a requirement.
    $suffix = ''
    if ($Extra) { $suffix = "[$Extra]" }
    if (Test-Path -LiteralPath $Source) {
        $folder = (Resolve-Path -LiteralPath $Source).Path
        if (-not (Test-Path -LiteralPath (Join-Path $folder 'pyproject.toml'))) {
            throw "$folder is not an embedgen checkout (no pyproject.toml); pass -Source with the checkout or a pip requirement such as embedgen"
        }
        return "$folder$suffix"
    }
    if ($Source -match '^([A-Za-z0-9_.-]+)(.*)$') {
        return "$($Matches[1])$suffix$($Matches[2])"
    }
    throw "-Source '$Source' is neither a folder nor a pip requirement"
}

function Get-OrtInstalled {
    # Names of installed onnxruntime distributions, from the venv's package metadata.
    # (No double quotes in the Python code: Windows PowerShell 5.1 mangles them.)
    $code = 'import importlib.metadata as m, sys; ' +
        'names = {str(d.metadata[''Name'']).lower().replace(''_'', ''-'') for d in m.distributions()}; ' +
        'print(chr(10).join(sorted(names & set(sys.argv[1:]))))'
    $found = & $VenvPython -c $code @OrtPackages
    if ($LASTEXITCODE -ne 0) { throw 'Could not list installed packages in the virtual environment' }
    return @($found | Where-Object { $_ })
}

# 1. The virtual environment.
if (Test-Path -LiteralPath $VenvPython) {
    Write-Host "Using the virtual environment in $VenvPath"
}
elseif ($PSCmdlet.ShouldProcess($VenvPath, 'Create a Python virtual environment')) {
    $py = @(Find-Python)
    $pyArgs = @($py | Select-Object -Skip 1)
    Invoke-Native 'Checking the Python version' $py[0] ($pyArgs + @('-c', 'import sys; sys.exit(sys.version_info < (3, 10))'))
    New-Item -ItemType Directory -Force -Path $HomeDir | Out-Null
    Invoke-Native 'Creating the virtual environment' $py[0] ($pyArgs + @('-m', 'venv', $VenvPath))
}

# 2. embedgen with exactly one onnxruntime flavour.
$spec = Get-InstallSpec
if ($PSCmdlet.ShouldProcess($VenvPath, "Install $spec with $Flavour (removing other onnxruntime packages)")) {
    Invoke-Native 'Upgrading pip' $VenvPython @('-m', 'pip', 'install', '--quiet', '--upgrade', 'pip')
    Invoke-Native 'Removing onnxruntime packages' $VenvPython (@('-m', 'pip', 'uninstall', '--yes') + $OrtPackages)
    Invoke-Native "Installing $spec" $VenvPython @('-m', 'pip', 'install', '--upgrade', $spec)
    if ($Flavour -ne 'onnxruntime') {
        $version = & $VenvPython -c "import importlib.metadata as m; print(m.version('$Flavour'))"
        if ($LASTEXITCODE -ne 0 -or -not $version) { throw "$Flavour was not installed by $spec" }
        Invoke-Native 'Removing plain onnxruntime' $VenvPython @('-m', 'pip', 'uninstall', '--yes', 'onnxruntime')
        Invoke-Native "Restoring $Flavour files" $VenvPython @('-m', 'pip', 'install', '--force-reinstall', '--no-deps', "$Flavour==$version")
    }
    $installed = @(Get-OrtInstalled)
    if ($installed.Count -ne 1 -or $installed[0] -ne $Flavour) {
        throw "Expected only $Flavour installed, found: $($installed -join ', '); re-run this script"
    }
    Write-Host "Installed embedgen with $Flavour into $VenvPath"
}

# 3. The scripts and the config template, next to the virtual environment.
$repo = Split-Path -Parent $PSScriptRoot
$copies = @(
    @{ From = $PSScriptRoot; Pattern = '*.ps1'; To = Join-Path $HomeDir 'windows' },
    @{ From = Join-Path $repo 'configs'; Pattern = 'windows_config.toml'; To = Join-Path $HomeDir 'configs' }
)
foreach ($copy in $copies) {
    if ($copy.From -eq $copy.To -or -not (Test-Path -LiteralPath $copy.From)) { continue }
    if ($PSCmdlet.ShouldProcess($copy.To, "Copy $($copy.Pattern) from $($copy.From)")) {
        New-Item -ItemType Directory -Force -Path $copy.To | Out-Null
        Copy-Item -Path (Join-Path $copy.From $copy.Pattern) -Destination $copy.To -Force
    }
}

# 4. An optional model.
if ($Model -and $PSCmdlet.ShouldProcess($Model, 'Download the model with embedgen download')) {
    & $Embedgen download $Model
    if ($LASTEXITCODE -ne 0) { throw "embedgen download $Model failed (exit code $LASTEXITCODE)" }
}

# 5. Check the result.
if (-not $SkipDoctor -and -not $WhatIfPreference) {
    & $Embedgen doctor
    if ($LASTEXITCODE -ne 0) {
        Write-Warning "embedgen doctor found problems (exit code $LASTEXITCODE); see the FAIL lines above"
        exit $LASTEXITCODE
    }
}
Write-Host "Done. embedgen is at $Embedgen"

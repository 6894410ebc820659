<#
.SYNOPSIS
Removes the embedgen scheduled task registered by Register-EmbedgenTask.ps1.

.DESCRIPTION
Unregisters the task. Its log files, the config, the virtual environment, the
models and the cache are left in place; delete %LOCALAPPDATA%\embedgen to remove
everything. Removing a task that does not exist is not an error, so the script
is safe to run twice.

.PARAMETER TaskName
Name of the task. Default: "embedgen nightly".

.PARAMETER TaskPath
Task Scheduler folder of the task. Default: \ (the root).

.EXAMPLE
.\windows\Unregister-EmbedgenTask.ps1

Removes the "embedgen nightly" task.

.EXAMPLE
.\windows\Unregister-EmbedgenTask.ps1 -TaskName 'embedgen weekly' -WhatIf

Shows what would be removed, changing nothing.
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    [string]$TaskName = 'embedgen nightly',

    [string]$TaskPath = '\'
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$task = Get-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -ErrorAction SilentlyContinue
if (-not $task) {
    Write-Host "No scheduled task '$TaskPath$TaskName'; nothing to remove."
    return
}
if ($task.State -eq 'Running') {
    Write-Warning "'$TaskName' is running now; unregistering does not stop that run"
}
if ($PSCmdlet.ShouldProcess("$TaskPath$TaskName", 'Unregister the scheduled task')) {
    Unregister-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -Confirm:$false
    Write-Host "Removed the scheduled task '$TaskPath$TaskName'."
}

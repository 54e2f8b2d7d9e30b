/* global process */
// Preloaded (node --import) into every script `distsampler run` starts. Plain JavaScript, so a .js
// script runs under plain node. The script must not outlive its launcher: the IPC channel fork()
// opens is watched for the launcher's end (and unref'd, so it never keeps the script alive).
// A terminal's Ctrl-C is the launcher's to handle: it stops the coordinator first, then its scripts.
if (process.channel) {
  process.channel.unref();
  process.on('disconnect', () => process.exit(1));
}
if (process.env.DISTSAMPLER_LAUNCHED === '1') process.on('SIGINT', () => {});

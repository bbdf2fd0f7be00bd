// Preloaded (--import) into a child process: report its peak RSS on exit, for memory bounds.
process.on('exit', () => process.stderr.write(`MAXRSS_KB ${process.resourceUsage().maxRSS}\n`));

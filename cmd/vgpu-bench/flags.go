package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// benchCmd is what every benchmark command shares: its flag set with the
// --json, --out and --quiet flags, --help, stray arguments, error messages and
// the report at the end. Each command declares only its own flags on fs, so
// their names, defaults and help texts stay next to the options they set.
type benchCmd struct {
	name           string // "overhead": messages read "vgpu-bench overhead: ..."
	fs             *flag.FlagSet
	jsonOut, quiet *bool
	out            *string
	stdout, stderr io.Writer
	// helpOnStderr leaves --help where the flag package prints it (stderr)
	// instead of printing it again on stdout; throttle has always done so.
	helpOnStderr bool
}

// newBenchCmd makes the flag set of `vgpu-bench name`: help is the text before
// the flag list, outName the report's file name under --out DIR (in --out's
// help, e.g. "overhead-<simgpu|real>").
func newBenchCmd(name, help, outName string, stdout, stderr io.Writer) *benchCmd {
	fs := flag.NewFlagSet("vgpu-bench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &benchCmd{name: name, fs: fs, stdout: stdout, stderr: stderr}
	c.jsonOut = fs.Bool("json", false, "print the JSON report on stdout instead of Markdown")
	c.out = fs.String("out", "", "also write the report to files: a directory DIR gets DIR/"+outName+".json\n"+
		"and .md; a path ending in .json gets that file and the same name with .md")
	c.quiet = fs.Bool("quiet", false, "no progress lines on stderr")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), help)
		fs.PrintDefaults()
	}
	return c
}

// rootFlag declares --root into p; holds says what the root holds ("build/",
// "bin/ and build/"), as the benchmark needs it.
func (c *benchCmd) rootFlag(p *string, holds string) {
	c.fs.StringVar(p, "root", "", "repository root holding "+holds+" (default: found from the working\n"+
		"directory or the executable)")
}

// parse parses args. When it returns false the command is over and its exit
// status is the int: 0 after --help, 2 for a bad flag (the flag package has
// said why on stderr) or a stray argument.
func (c *benchCmd) parse(args []string) (int, bool) {
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			if !c.helpOnStderr {
				c.fs.SetOutput(c.stdout)
				c.fs.Usage()
			}
			return 0, false
		}
		return 2, false
	}
	if c.fs.NArg() != 0 {
		return c.fail(2, "unexpected arguments: %s", strings.Join(c.fs.Args(), " ")), false
	}
	return 0, true
}

// fail prints "vgpu-bench NAME: message" on stderr and returns status.
func (c *benchCmd) fail(status int, format string, args ...any) int {
	fmt.Fprintf(c.stderr, "vgpu-bench %s: %s\n", c.name, fmt.Sprintf(format, args...))
	return status
}

// progress is where the benchmark's progress lines go: stderr, or nowhere
// (nil) with --quiet.
func (c *benchCmd) progress() io.Writer {
	if *c.quiet {
		return nil
	}
	return c.stderr
}

// emit writes the finished report (see emitReport) and returns the exit status.
func (c *benchCmd) emit(report markdowner, name string) int {
	return emitReport(c.name, report, name, *c.out, *c.jsonOut, c.stdout, c.stderr)
}

// quickPreset gives --quick's values (flag name, value, ...) to the flags the
// command line did not set: a flag given explicitly wins over the preset, in
// whatever order the two were written. The preset names flags of the
// command's own set; a name it lacks is a programming error, reported as one.
func (c *benchCmd) quickPreset(quick bool, preset ...string) error {
	if !quick {
		return nil
	}
	if len(preset)%2 != 0 {
		return fmt.Errorf("--quick preset %v: want flag, value pairs", preset)
	}
	given := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for i := 0; i < len(preset); i += 2 {
		name, value := preset[i], preset[i+1]
		if c.fs.Lookup(name) == nil {
			return fmt.Errorf("--quick presets --%s, which this command lacks", name)
		}
		if given[name] {
			continue
		}
		if err := c.fs.Set(name, value); err != nil {
			return fmt.Errorf("--quick preset --%s=%s: %w", name, value, err)
		}
	}
	return nil
}

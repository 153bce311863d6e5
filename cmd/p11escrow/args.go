package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// flagsFirst moves a command's flags before its arguments, so that `reheader IN --header H` and
// `authority approve REQ --key L` work as written: urfave/cli v2 stops reading flags at the first
// argument. It walks the command path, then, for the last command, takes every token that names
// one of its flags (with the next token as the value, unless the flag is boolean or written as
// --flag=value) and puts them first. "-" (stdin) is an argument, and everything after "--"
// stays as it is.
func flagsFirst(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	cmds, i := app.Commands, 1
	var cmd *cli.Command
	for ; i < len(args); i++ {
		c := findCommand(cmds, args[i])
		if c == nil {
			break
		}
		cmd, cmds = c, c.Subcommands
		out = append(out, args[i])
	}
	if cmd == nil || len(cmd.Subcommands) > 0 {
		return args
	}
	var flags, rest []string
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		f := findFlag(cmd.Flags, a)
		if f == nil {
			rest = append(rest, a)
			continue
		}
		flags = append(flags, a)
		if _, isBool := f.(*cli.BoolFlag); !isBool && !strings.Contains(a, "=") && i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	return append(append(out, flags...), rest...)
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// findFlag returns the flag a token like -o, --out or --out=x names, or nil.
func findFlag(flags []cli.Flag, token string) cli.Flag {
	if len(token) < 2 || token[0] != '-' {
		return nil
	}
	name, _, _ := strings.Cut(strings.TrimLeft(token, "-"), "=")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	if name == "help" || name == "h" {
		return &cli.BoolFlag{Name: name}
	}
	return nil
}

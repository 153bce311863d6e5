// Command p11escrow encrypts files under keys held in PKCS#11 tokens and escrows every file's key
// with a backup authority. See README.md for the model and escrow/FORMAT.md for the format.
package main

import (
	"fmt"
	"os"

	"github.com/p11escrow/p11escrow/internal/safetext"
	"github.com/urfave/cli/v2"
)

func main() {
	app := newApp()
	// Flags end at the first operand or at "--", as POSIX and age have it, so that a file named
	// like a flag (say --to=m.pub, planted where a glob picks it up) is never taken for one.
	if err := app.Run(os.Args); err != nil {
		err = advise(err)
		fmt.Fprintf(os.Stderr, "p11escrow: %s\n", safetext.Clean(oneLine(err)))
		if exitCode(err) == exitUsage {
			fmt.Fprintln(os.Stderr, "p11escrow: see 'p11escrow help' or add --help to the command")
		}
		os.Exit(exitCode(err))
	}
}

func newApp() *cli.App {
	app := &cli.App{
		Name:  "p11escrow",
		Usage: "encrypt files with keys on PKCS#11 tokens, and escrow each file's key with a backup authority",
		Description: "Each file gets a fresh AES-256 session key, generated on your token and wrapped there\n" +
			"for your exchange key and for the backup authority's key. The authority's copy also goes\n" +
			"into an escrow record that you send to the authority.\n\n" +
			"PINs come from --pin-file, a URI's pin-source, $P11ESCROW_AUTHORITY_PIN (authority commands)\n" +
			"or $P11ESCROW_OFFICER_PIN (authority approve), $P11ESCROW_PIN, or a prompt, in that order;\n" +
			"never from the command line.\n\n" +
			"Exit status: 0 success, 1 other failure, 2 usage error, 3 PIN wrong, locked or missing,\n" +
			"4 file not addressed to this token, 5 input tampered with, truncated or not p11escrow,\n" +
			"6 refused by the backup authority's rules.",
		Version:              version(),
		EnableBashCompletion: true,
		Suggest:              true,
		Commands: []*cli.Command{
			tokenCommand(),
			keyCommand(),
			encryptCommand(),
			decryptCommand(),
			inspectCommand(),
			authorityCommand(),
			reheaderCommand(),
			receiptCommand(),
			escrowCommand(),
			completionCommand(),
			manCommand(),
		},
		Action:         groupAction,
		OnUsageError:   onUsageError,
		ExitErrHandler: func(*cli.Context, error) {}, // main prints the one line
	}
	setUsageErrors(app.Commands)
	return app
}

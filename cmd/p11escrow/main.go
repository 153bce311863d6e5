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
		fmt.Fprintf(os.Stderr, "p11escrow: %s\n", safetext.Clean(oneLine(err)))
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:  "p11escrow",
		Usage: "encrypt files with keys on PKCS#11 tokens, and escrow each file's key with a backup authority",
		Description: "Each file gets a fresh AES-256 session key, generated on your token and wrapped there\n" +
			"for your exchange key and for the backup authority's key. The authority's copy also goes\n" +
			"into an escrow record that you send to the authority.\n\n" +
			"PINs come from $P11ESCROW_PIN, --pin-file, or a prompt; never from the command line.",
		HideHelpCommand:      true,
		EnableBashCompletion: false,
		Commands: []*cli.Command{
			tokenCommand(),
			keyCommand(),
			encryptCommand(),
			decryptCommand(),
			inspectCommand(),
			authorityCommand(),
			reheaderCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {}, // main prints the one line
	}
}

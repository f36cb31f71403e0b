// Reads a cosigned checkpoint written by Sovereign with Go's own signed-note package,
// golang.org/x/mod/sumdb/note (Debian: golang-golang-x-mod-dev): the log's signature must
// verify and the cosignatures must be kept as unverified signatures under the witnesses'
// names and key IDs; then each cosignature/v1 is checked here, from the specification
// (c2sp.org/tlog-cosignature), with Go's crypto/ed25519.
//
// Usage: go run cosigned_note.go NOTE LOG_VKEY WITNESS_VKEY...
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

type witness struct {
	name string
	id   uint32
	key  ed25519.PublicKey
}

// parseWitnessKey reads a C2SP vkey of signature type 0x04.
func parseWitnessKey(vkey string) witness {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		fail("malformed witness key %q", vkey)
	}
	typed, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(typed) != 33 || typed[0] != 0x04 {
		fail("witness key %q is not an Ed25519 cosignature/v1 key", vkey)
	}
	h := sha256.Sum256(append([]byte(parts[0]+"\n"), typed...))
	id := binary.BigEndian.Uint32(h[:4])
	stated, err := strconv.ParseUint(parts[1], 16, 32)
	if err != nil || uint32(stated) != id {
		fail("witness key %q: key ID does not match", vkey)
	}
	return witness{parts[0], id, ed25519.PublicKey(typed[1:])}
}

func main() {
	if len(os.Args) < 4 {
		fail("usage: cosigned_note NOTE LOG_VKEY WITNESS_VKEY...")
	}
	msg, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail("%v", err)
	}
	logVerifier, err := note.NewVerifier(os.Args[2])
	if err != nil {
		fail("log key: %v", err)
	}
	n, err := note.Open(msg, note.VerifierList(logVerifier))
	if err != nil {
		fail("note.Open: %v", err)
	}
	if len(n.Sigs) != 1 || n.Sigs[0].Name != logVerifier.Name() || n.Sigs[0].Hash != logVerifier.KeyHash() {
		fail("the log's signature is not the one verified signature: %+v", n.Sigs)
	}
	cosigned := 0
	for _, vkey := range os.Args[3:] {
		w := parseWitnessKey(vkey)
		found := false
		for _, sig := range n.UnverifiedSigs {
			if sig.Name != w.name || sig.Hash != w.id {
				continue
			}
			raw, err := base64.StdEncoding.DecodeString(sig.Base64)
			if err != nil || len(raw) != 4+8+64 {
				fail("cosignature of %s is malformed", w.name)
			}
			timestamp := binary.BigEndian.Uint64(raw[4:12])
			var signed bytes.Buffer
			fmt.Fprintf(&signed, "cosignature/v1\ntime %d\n", timestamp)
			signed.WriteString(n.Text)
			if !ed25519.Verify(w.key, signed.Bytes(), raw[12:]) {
				fail("cosignature of %s does not verify", w.name)
			}
			found = true
		}
		if !found {
			fail("no cosignature by %s+%08x", w.name, w.id)
		}
		cosigned++
	}
	fmt.Printf("ok: log signature verified, %d cosignatures verified\n", cosigned)
}

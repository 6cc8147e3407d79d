package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"gopkg.in/yaml.v3"
)

// applyYAML decodes one YAML document onto c. It walks the yaml.v3 node
// tree against the key table: as strict as decoding into Config with
// yaml.v3's KnownFields(true), but every message names the full dotted key
// and its line, and every problem is reported rather than the first. Each value goes through the same parser
// as its environment variable. fatal is a syntax error; errs are problems
// with single keys, after which the walk goes on.
func applyYAML(c *Config, data []byte) (errs []error, fatal error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil // empty file, or only comments
		}
		return nil, err
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("a second YAML document starts at line %d; the file must hold one", next.Line)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, nil
		}
		root = root.Content[0]
	}
	w := walker{c: c}
	w.mapping("", root)
	return w.errs, nil
}

type walker struct {
	c    *Config
	errs []error
}

func (w *walker) fail(format string, args ...any) {
	w.errs = append(w.errs, fmt.Errorf(format, args...))
}

// mapping walks the mapping at prefix ("" for the top level, else "hls.").
func (w *walker) mapping(prefix string, n *yaml.Node) {
	n = resolve(n)
	if isNull(n) {
		return // "hls:" with nothing below it
	}
	where := "the top level"
	if prefix != "" {
		where = fmt.Sprintf("%q", prefix[:len(prefix)-1])
	}
	if n.Kind != yaml.MappingNode {
		w.fail("%s at line %d must be a mapping of keys, not %s", where, n.Line, kindName(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := resolve(n.Content[i]), n.Content[i+1]
		if kn.Kind != yaml.ScalarNode {
			w.fail("a key in %s at line %d is %s, not a name", where, kn.Line, kindName(kn))
			continue
		}
		if kn.ShortTag() == "!!merge" {
			w.fail("merge key \"<<\" at line %d is not supported", kn.Line)
			continue
		}
		name := kn.Value
		full := prefix + name
		if first, dup := seen[name]; dup {
			w.fail("key %q at line %d is already set at line %d", full, kn.Line, first)
			continue
		}
		seen[name] = kn.Line
		switch {
		case keySchema.leaves[full] != nil:
			w.leaf(keySchema.leaves[full], vn)
		case keySchema.sections[full]:
			w.mapping(full+".", vn)
		default:
			msg := fmt.Sprintf("unknown key %q at line %d", full, kn.Line)
			if s := suggest(name, keySchema.children[prefix]); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", prefix+s)
			}
			w.errs = append(w.errs, errors.New(msg))
		}
	}
}

func (w *walker) leaf(k *key, n *yaml.Node) {
	n = resolve(n)
	if isNull(n) {
		return // "admin_key:" with no value keeps the default
	}
	if n.Kind != yaml.ScalarNode {
		w.fail("%s at line %d must be a single value, not %s", k.path, n.Line, kindName(n))
		return
	}
	if err := k.set(w.c, n.Value); err != nil {
		w.fail("%s at line %d: invalid value %s: %w", k.path, n.Line, quote(n.Value), err)
	}
}

// resolve follows aliases (*name) to the anchored node.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; i < 16 && n.Kind == yaml.AliasNode && n.Alias != nil; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("the value %s", quote(n.Value))
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	return "an unexpected node"
}

// suggest returns the candidate closest to name, when it is a likely typo.
func suggest(name string, candidates []string) string {
	best, bestDist := "", 3 // at most two edits away
	if len(name) > 64 {
		return ""
	}
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

"""FileWatch on real directories: quiet while nothing happens to the watched names (even with
other files in the same directories written), and "maybe" for an in-place write, a replace
by rename, a delete, a permission change, a missing directory coming into existence, the
watched directory removed, or a filesystem inotify cannot be trusted on."""

import os
import shutil

from modules.optimization.file_watch import FileWatch


def _tree(tmp_path):
    claude = tmp_path / "project" / ".claude"
    (claude / "hookopt").mkdir(parents=True)
    (claude / "settings.json").write_text("{}")
    (claude / "hookopt" / "install.json").write_text("{}")
    home = tmp_path / "home" / ".claude"  # its hookopt directory does not exist yet
    home.mkdir(parents=True)
    paths = [claude / "settings.json", claude / "hookopt" / "install.json", home / "settings.json", home / "hookopt" / "install.json"]
    return claude, home, paths


def test_quiet_until_a_watched_name_changes_and_quiet_again_after(tmp_path):
    claude, home, paths = _tree(tmp_path)
    watch = FileWatch(paths)
    assert watch.usable
    assert not watch.maybe_changed()
    # What the daemon itself writes next to the install's files does not count.
    (claude / "hookopt" / "daemon.log").write_text("line\n")
    (claude / "hookopt" / "journal").write_bytes(b"x")
    os.unlink(claude / "hookopt" / "journal")
    (home / "todos.json").write_text("[]")
    assert not watch.maybe_changed()
    with open(claude / "settings.json", "r+") as f:  # an editor writing in place
        f.write('{"hooks": {}}')
    assert watch.maybe_changed()
    assert not watch.maybe_changed()  # each change is told once
    watch.close()


def test_a_replace_a_delete_a_chmod_and_a_new_file_are_each_seen(tmp_path):
    claude, home, paths = _tree(tmp_path)
    watch = FileWatch(paths)
    new = claude / "hookopt" / "install.json.tmp"
    new.write_text('{"v": 2}')
    assert not watch.maybe_changed()  # not a watched name
    os.rename(new, claude / "hookopt" / "install.json")  # how the installer writes
    assert watch.maybe_changed()
    os.chmod(claude / "settings.json", 0o600)
    assert watch.maybe_changed()
    os.unlink(claude / "settings.json")
    assert watch.maybe_changed()
    (home / "settings.json").write_text("{}")  # created where there was none
    assert watch.maybe_changed()
    watch.close()


def test_a_missing_directory_is_watched_through_its_ancestor(tmp_path):
    _, home, paths = _tree(tmp_path)
    watch = FileWatch(paths)
    (home / "hookopt").mkdir()  # a user-scope install begins
    assert watch.maybe_changed()
    watch.close()
    watch = FileWatch(paths)  # watched afresh, as the daemon does after a change
    (home / "hookopt" / "other.json").write_text("{}")
    assert not watch.maybe_changed()
    (home / "hookopt" / "install.json").write_text("{}")
    assert watch.maybe_changed()
    watch.close()


def test_the_watched_directory_removed_is_a_change(tmp_path):
    claude, _, paths = _tree(tmp_path)
    watch = FileWatch(paths)
    shutil.rmtree(claude / "hookopt")
    assert watch.maybe_changed()
    watch.close()


def test_a_filesystem_inotify_cannot_be_trusted_on_is_always_maybe(tmp_path):
    _, _, paths = _tree(tmp_path)
    watch = FileWatch(paths, local_fs=frozenset())  # as on NFS: another machine's writes go unseen
    assert not watch.usable and watch.fd == -1
    assert watch.maybe_changed() and watch.maybe_changed()

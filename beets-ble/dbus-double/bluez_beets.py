# -*- coding: utf-8 -*-
'''bluetoothd double for BeeTS tier-2 tests (beets-ble/dbus-double, see README.md there).

Extends python-dbusmock's ``bluez5`` template (Adapter1, Device1, RemoveDevice, discovery) with
``org.bluez.LEAdvertisingManager1`` on every adapter and a virtual air between the adapters:

* ``RegisterAdvertisement(path, options)`` reads the caller's ``org.bluez.LEAdvertisement1``
  properties back with ``GetAll`` (asynchronously, as bluetoothd does), checks the instance limit
  (``org.bluez.Error.NotPermitted`` "Maximum advertisements reached", as bluetoothd), stores the
  advertisement and emits ``ActiveInstances``/``SupportedInstances`` changes.
  ``UnregisterAdvertisement(path)`` removes it; so does the caller leaving the bus.
* Every ``report_interval_ms`` each registered advertisement is "received" by every *other*
  adapter that is discovering, the way bluetoothd reports an advertising report on D-Bus:
  a new ``Device1`` (``InterfacesAdded``) or ``PropertiesChanged`` for what changed. Like
  bluetoothd, the ``UUIDs`` of a device only grow (``device_add_eir_uuids``) until the device is
  removed (``RemoveDevice``), the name is replaced, and a local name longer than the scan
  response is cut to a short name (``serialize_name`` in ``src/shared/ad.c``).
* Like Linux (6.1), a controller without ``HardwareOffload`` (legacy advertising) has one
  advertisement on air at a time: a newly registered one goes on air at once only when none is
  advertising, and waits otherwise until the one on air is unregistered (no rotation is
  modelled). Controllers with ``HardwareOffload`` air every registered advertisement.
  ``add_foreign`` registers another program's advertisement (as ``bluetoothctl advertise``).
* Quirks are configurable (``Control("configure", ...)``): the order in which ``Name`` and
  ``UUIDs`` arrive (``uuids_first``, ``name_first``, ``together``, ``alternate``), repeated
  ``PropertiesChanged`` signals, lost scan responses.

Test control goes through one method on the mock interface, with JSON in and out, so any client
(here ``dbus-send``) can drive it::

    org.bluez.Mock.Control(command: s, json: s) -> s

Commands: ``add_adapter``, ``configure``, ``advertisements``, ``inject``, ``devices``,
``add_foreign``, ``remove_foreign``, ``stats``. See ``README.md``.
'''

import json

import dbus
from dbusmock import OBJECT_MANAGER_IFACE, mockobject
from dbusmock.templates import bluez5
from gi.repository import GLib

BUS_NAME = 'org.bluez'
MAIN_OBJ = '/'
SYSTEM_BUS = True
IS_OBJECT_MANAGER = True

MOCK_IFACE = 'org.bluez.Mock'
ADAPTER_IFACE = 'org.bluez.Adapter1'
DEVICE_IFACE = 'org.bluez.Device1'
ADV_MGR_IFACE = 'org.bluez.LEAdvertisingManager1'
ADV_IFACE = 'org.bluez.LEAdvertisement1'
BASE_SUFFIX = '-0000-1000-8000-00805f9b34fb'

# Shared state of the double (one process, one air).
AIR = {
    'config': {
        'report_interval_ms': 100,
        'order': 'alternate',       # uuids_first | name_first | together | alternate
        'repeat_signals': 1,        # each PropertiesChanged sent this many times
        'drop_name_every': 0,       # every n-th report loses its scan response (0: never)
        'rssi': -55,
    },
    'adapters': {},                 # name -> state dict
    'stats': {'registered': 0, 'unregistered': 0, 'reports': 0, 'removed': 0,
              'refused_max': 0, 'names_truncated': 0, 'injected': 0,
              'never_aired': 0, 'foreign': 0, 'refused_sets': 0},
    'tick': 0,
    'timer': None,
}


def _err(name, msg):
    return dbus.exceptions.DBusException(msg, name=name)


def _uuid16(u):
    '''16-bit value of a base-UUID string, else None.'''
    u = str(u).lower()
    if len(u) == 36 and u.startswith('0000') and u.endswith(BASE_SUFFIX):
        return int(u[4:8], 16)
    return None


def _uuid_str(v):
    '''128-bit string of a 16-bit value or of a UUID string.'''
    if isinstance(v, int):
        return f'{v:08x}{BASE_SUFFIX}'
    return str(v).lower()


def _plain(v):
    '''dbus value -> JSON-able value.'''
    if isinstance(v, (dbus.String, dbus.ObjectPath, dbus.Signature)):
        return str(v)
    if isinstance(v, dbus.Boolean):
        return bool(v)
    if isinstance(v, (dbus.Byte, dbus.Int16, dbus.UInt16, dbus.Int32, dbus.UInt32,
                      dbus.Int64, dbus.UInt64)):
        return int(v)
    if isinstance(v, dbus.Double):
        return float(v)
    if isinstance(v, (dbus.Array, list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (dbus.Dictionary, dict)):
        return {str(_plain(k)): _plain(x) for k, x in v.items()}
    return v


def _emit_changed(obj, iface, changed):
    for _ in range(max(1, AIR['config']['repeat_signals'])):
        obj.EmitSignal(dbus.PROPERTIES_IFACE, 'PropertiesChanged', 'sa{sv}as', [
            iface, dbus.Dictionary(changed, signature='sv'), dbus.Array([], signature='s')])


def _manager_props(st):
    caps = {
        'MaxAdvLen': dbus.Byte(st['max_adv_len']),
        'MaxScnRspLen': dbus.Byte(st['max_scan_rsp_len']),
    }
    if st['tx_power'] is not None:
        caps['MinTxPower'] = dbus.Int16(st['tx_power'][0])
        caps['MaxTxPower'] = dbus.Int16(st['tx_power'][1])
    active = len(st['ads'])
    return {
        'ActiveInstances': dbus.Byte(active, variant_level=1),
        'SupportedInstances': dbus.Byte(max(0, st['instances'] - active), variant_level=1),
        'SupportedIncludes': dbus.Array(['tx-power', 'appearance', 'local-name'],
                                        signature='s', variant_level=1),
        'SupportedFeatures': dbus.Array(['HardwareOffload'] if st['hardware_offload'] else [],
                                        signature='s', variant_level=1),
        'SupportedCapabilities': dbus.Dictionary(caps, signature='sv', variant_level=1),
    }


def _refresh_manager(st):
    adapter = mockobject.objects[st['path']]
    props = _manager_props(st)
    adapter.props[ADV_MGR_IFACE].update(props)
    _emit_changed(adapter, ADV_MGR_IFACE, {
        'ActiveInstances': props['ActiveInstances'],
        'SupportedInstances': props['SupportedInstances'],
    })


def _on_air(st, key):
    '''Whether the advertisement `key` of adapter `st` is on air now (see the module docs).'''
    return st['hardware_offload'] or st['on_air'] == key


def _added(st, key, ad):
    '''A registered advertisement: on air at once unless another one is (legacy controller).'''
    ad['aired'] = False
    st['ads'][key] = ad
    if not st['hardware_offload'] and st['on_air'] is None:
        st['on_air'] = key
    _refresh_manager(st)
    if _on_air(st, key):
        _air_once(st['name'], ad)


def _removed(st, key):
    '''An advertisement unregistered; on a legacy controller the next waiting one goes on air.'''
    ad = st['ads'].pop(key)
    AIR['stats']['unregistered'] += 1
    if not ad.get('aired') and not ad.get('foreign'):
        AIR['stats']['never_aired'] += 1
    if st['on_air'] == key:
        st['on_air'] = next(iter(st['ads']), None)


def _method(obj, iface, name, func, in_sig, out_sig, **keywords):
    '''Adds a dbus-python method with keywords (sender, async callbacks) to a mock object.'''
    wrapped = dbus.service.method(iface, in_signature=in_sig, out_signature=out_sig,
                                  **keywords)(func)
    obj.methods.setdefault(iface, {})[name] = (in_sig, out_sig, func, wrapped)


def register_advertisement(adapter, path, _options, sender, connection, ok, fail):
    st = adapter.beets
    key = (str(sender), str(path))
    if key in st['ads'] or key in st['pending']:
        fail(_err('org.bluez.Error.AlreadyExists', 'Already Exists'))
        return
    if len(st['ads']) + len(st['pending']) >= st['instances']:
        AIR['stats']['refused_max'] += 1
        fail(_err('org.bluez.Error.NotPermitted', 'Maximum advertisements reached'))
        return
    instance = 1
    used = {a['instance'] for a in st['ads'].values()} | set(st['pending'].values())
    while instance in used:
        instance += 1
    st['pending'][key] = instance

    def got(props):
        st['pending'].pop(key, None)
        props = _plain(props)
        kind = props.get('Type')
        if kind not in ('broadcast', 'peripheral'):
            fail(_err('org.bluez.Error.Failed', 'Failed to parse advertisement.'))
            return
        if kind == 'broadcast' and props.get('Discoverable'):
            fail(_err('org.bluez.Error.Failed', 'Failed to parse advertisement.'))
            return
        uuids = [str(u).lower() for u in props.get('ServiceUUIDs', [])]
        u16 = [u for u in uuids if _uuid16(u) is not None]
        u128 = [u for u in uuids if _uuid16(u) is None]
        adv_len = (2 + 2 * len(u16) if u16 else 0) + (2 + 16 * len(u128) if u128 else 0)
        if adv_len > st['max_adv_len']:
            fail(_err('org.bluez.Error.Failed', 'Failed to register advertisement'))
            return
        if st['sets'] is not None and len(st['ads']) >= st['sets']:
            # The controller has fewer advertising sets than announced (btvirt 5.x: LE Set
            # Extended Advertising Parameters -> Memory Capacity Exceeded).
            AIR['stats']['refused_sets'] += 1
            fail(_err('org.bluez.Error.Failed', 'Failed to register advertisement'))
            return
        name = props.get('LocalName')
        if name is not None and 2 + len(name.encode()) > st['max_scan_rsp_len']:
            name = name.encode()[:max(0, st['max_scan_rsp_len'] - 2)].decode(errors='ignore')
            AIR['stats']['names_truncated'] += 1
        idx = st['index']
        ad = {
            'owner': key[0], 'path': key[1], 'instance': instance, 'props': props,
            'uuids': uuids, 'name': name,
            'address': f'C0:DE:{idx // 256:02X}:{idx % 256:02X}:00:{instance:02X}',
        }
        AIR['stats']['registered'] += 1
        _watch_owner(connection, key[0])
        ok()
        _added(st, key, ad)

    def failed(e):
        st['pending'].pop(key, None)
        fail(_err('org.bluez.Error.Failed', f'Failed to read advertisement: {e}'))

    connection.call_async(sender, path, dbus.PROPERTIES_IFACE, 'GetAll', 's', (ADV_IFACE,),
                          got, failed)


def unregister_advertisement(adapter, path, sender):
    st = adapter.beets
    key = (str(sender), str(path))
    if key not in st['ads']:
        raise _err('org.bluez.Error.DoesNotExist', 'Does Not Exist')
    _removed(st, key)
    _refresh_manager(st)


_WATCHED = set()


def _watch_owner(connection, owner):
    '''bluetoothd drops a client's advertisements when it leaves the bus.'''
    if owner in _WATCHED:
        return
    _WATCHED.add(owner)

    def changed(new_owner):
        if new_owner:
            return
        _WATCHED.discard(owner)
        for st in AIR['adapters'].values():
            gone = [k for k in st['ads'] if k[0] == owner]
            for k in gone:
                _removed(st, k)
            if gone:
                _refresh_manager(st)

    connection.watch_name_owner(owner, changed)


def remove_device(adapter, path):
    bluez5.RemoveDevice(adapter, path)
    AIR['stats']['removed'] += 1


def report(rx_name, address, name, uuids, rssi=None, order=None, extra_uuids=()):
    '''What bluetoothd does on D-Bus for one advertising report heard by adapter rx_name.'''
    st = AIR['adapters'][rx_name]
    if order is None:
        order = AIR['config']['order']
    if order == 'alternate':
        order = 'uuids_first' if AIR['stats']['reports'] % 2 == 0 else 'name_first'
    AIR['stats']['reports'] += 1
    rssi = AIR['config']['rssi'] if rssi is None else rssi
    path = f"{st['path']}/dev_{address.replace(':', '_').upper()}"
    uuids = [_uuid_str(u) for u in list(uuids) + list(extra_uuids)]
    manager = mockobject.objects['/']
    if path not in mockobject.objects:
        props = {
            'Address': dbus.String(address, variant_level=1),
            'AddressType': dbus.String('random', variant_level=1),
            'Alias': dbus.String(name or address.replace(':', '-'), variant_level=1),
            'Adapter': dbus.ObjectPath(st['path'], variant_level=1),
            'Paired': dbus.Boolean(False, variant_level=1),
            'Bonded': dbus.Boolean(False, variant_level=1),
            'Trusted': dbus.Boolean(False, variant_level=1),
            'Blocked': dbus.Boolean(False, variant_level=1),
            'Connected': dbus.Boolean(False, variant_level=1),
            'LegacyPairing': dbus.Boolean(False, variant_level=1),
            'ServicesResolved': dbus.Boolean(False, variant_level=1),
            'RSSI': dbus.Int16(rssi, variant_level=1),
            'UUIDs': dbus.Array([], signature='s', variant_level=1),
        }
        later = {}
        if order in ('together', 'name_first') and name is not None:
            props['Name'] = dbus.String(name, variant_level=1)
        elif name is not None:
            later['Name'] = dbus.String(name, variant_level=1)
        if order in ('together', 'uuids_first') or not uuids:
            props['UUIDs'] = dbus.Array(uuids, signature='s', variant_level=1)
        else:
            later['UUIDs'] = dbus.Array(uuids, signature='s', variant_level=1)
        manager.AddObject(path, DEVICE_IFACE, props, [
            ('Connect', '', '', ''),
            ('Disconnect', '', '', ''),
            ('Pair', '', '', ''),
            ('CancelPairing', '', '', ''),
        ])
        dev = mockobject.objects[path]
        manager.EmitSignal(OBJECT_MANAGER_IFACE, 'InterfacesAdded', 'oa{sa{sv}}', [
            dbus.ObjectPath(path), {DEVICE_IFACE: props}])
        for k in ('UUIDs', 'Name'):
            if k in later:
                dev.props[DEVICE_IFACE][k] = later[k]
                _emit_changed(dev, DEVICE_IFACE, {k: later[k]})
        return
    dev = mockobject.objects[path]
    props = dev.props[DEVICE_IFACE]
    changes = []
    old = [str(u) for u in props.get('UUIDs', [])]
    merged = old + [u for u in uuids if u not in old]      # device_add_eir_uuids: append only
    if merged != old:
        props['UUIDs'] = dbus.Array(merged, signature='s', variant_level=1)
        changes.append(('UUIDs', props['UUIDs']))
    if name is not None and str(props.get('Name', '')) != name:
        props['Name'] = dbus.String(name, variant_level=1)
        props['Alias'] = dbus.String(name, variant_level=1)
        named = ('Name', props['Name'])
        if order == 'name_first':
            changes.insert(0, named)
        else:
            changes.append(named)
    if order == 'together' and changes:
        _emit_changed(dev, DEVICE_IFACE, dict(changes))
    else:
        for k, v in changes:
            _emit_changed(dev, DEVICE_IFACE, {k: v})
    if int(props.get('RSSI', 0)) != rssi:
        props['RSSI'] = dbus.Int16(rssi, variant_level=1)
        _emit_changed(dev, DEVICE_IFACE, {'RSSI': props['RSSI']})


def _air_once(tx_name, ad):
    ad['aired'] = True
    every = AIR['config']['drop_name_every']
    for rx_name, st in AIR['adapters'].items():
        if rx_name == tx_name:
            continue
        adapter = mockobject.objects[st['path']]
        if not adapter.props[ADAPTER_IFACE].get('Discovering'):
            continue
        name = ad['name']
        if every and (AIR['stats']['reports'] + 1) % every == 0:
            name = None
        report(rx_name, ad['address'], name, ad['uuids'])


def _tick():
    AIR['tick'] += 1
    for tx_name, st in list(AIR['adapters'].items()):
        for key, ad in list(st['ads'].items()):
            if _on_air(st, key):
                _air_once(tx_name, ad)
    return True


def _set_timer():
    if AIR['timer'] is not None:
        GLib.source_remove(AIR['timer'])
    AIR['timer'] = GLib.timeout_add(max(1, int(AIR['config']['report_interval_ms'])), _tick)


def add_adapter(args):
    name = args['name']
    path = '/org/bluez/' + name
    if path in mockobject.objects:
        raise _err(MOCK_IFACE + '.Exists', f'adapter {name} exists')
    index = len(AIR['adapters'])
    address = args.get('address') or f'00:BE:75:00:{index // 256:02X}:{index % 256:02X}'
    props = {
        'Address': dbus.String(address, variant_level=1),
        'AddressType': dbus.String('public', variant_level=1),
        'Name': dbus.String(args.get('alias', name), variant_level=1),
        'Alias': dbus.String(args.get('alias', name), variant_level=1),
        'Class': dbus.UInt32(0, variant_level=1),
        'Powered': dbus.Boolean(True, variant_level=1),
        'Discoverable': dbus.Boolean(False, variant_level=1),
        'DiscoverableTimeout': dbus.UInt32(180, variant_level=1),
        'Pairable': dbus.Boolean(True, variant_level=1),
        'PairableTimeout': dbus.UInt32(0, variant_level=1),
        'Discovering': dbus.Boolean(False, variant_level=1),
        'UUIDs': dbus.Array([], signature='s', variant_level=1),
        'Modalias': dbus.String('usb:v1D6Bp0246d0537', variant_level=1),
        'DiscoveryFilter': dbus.Dictionary({}, signature='sv', variant_level=1),
    }
    manager = mockobject.objects['/']
    manager.AddObject(path, ADAPTER_IFACE, props, [
        ('RemoveDevice', 'o', '', remove_device),
        ('StartDiscovery', '', '', bluez5.StartDiscovery),
        ('StopDiscovery', '', '', bluez5.StopDiscovery),
        ('SetDiscoveryFilter', 'a{sv}', '', bluez5.SetDiscoveryFilter),
    ])
    adapter = mockobject.objects[path]
    st = {
        'name': name, 'path': path, 'index': index,
        'instances': int(args.get('instances', 1)),
        'max_adv_len': int(args.get('max_adv_len', 31)),
        'max_scan_rsp_len': int(args.get('max_scan_rsp_len', 31)),
        'hardware_offload': bool(args.get('hardware_offload', False)),
        'tx_power': args.get('tx_power'),          # [min, max] or None (legacy controllers)
        'sets': args.get('sets'),                  # advertising sets the controller really has
        'ads': {}, 'pending': {},
        'on_air': None,                            # legacy controllers: the one advertising
    }
    adapter.beets = st
    AIR['adapters'][name] = st
    adapter.props[ADV_MGR_IFACE] = _manager_props(st)
    _method(adapter, ADV_MGR_IFACE, 'RegisterAdvertisement', register_advertisement,
            'oa{sv}', '', sender_keyword='sender', connection_keyword='connection',
            async_callbacks=('ok', 'fail'))
    _method(adapter, ADV_MGR_IFACE, 'UnregisterAdvertisement', unregister_advertisement,
            'o', '', sender_keyword='sender')
    manager.EmitSignal(OBJECT_MANAGER_IFACE, 'InterfacesAdded', 'oa{sa{sv}}', [
        dbus.ObjectPath(path), {ADAPTER_IFACE: props, ADV_MGR_IFACE: adapter.props[ADV_MGR_IFACE]}])
    return {'path': path, 'address': address}


def _advertisements(args):
    st = AIR['adapters'][args['adapter']]
    return [{'owner': a['owner'], 'path': a['path'], 'instance': a['instance'],
             'address': a['address'], 'props': a['props'], 'on_air': _on_air(st, k),
             'foreign': bool(a.get('foreign'))} for k, a in st['ads'].items()]


def _add_foreign(args):
    '''Another program's advertisement on `adapter` (as `bluetoothctl advertise on`).'''
    st = AIR['adapters'][args['adapter']]
    if len(st['ads']) + len(st['pending']) >= st['instances']:
        raise _err('org.bluez.Error.NotPermitted', 'Maximum advertisements reached')
    AIR['stats']['foreign'] += 1
    n = AIR['stats']['foreign']
    key = (':foreign', f'/foreign/{n}')
    uuids = [_uuid_str(u) for u in args.get('uuids', [0x1521])]
    idx = st['index']
    ad = {'owner': key[0], 'path': key[1], 'instance': 100 + n, 'foreign': True,
          'props': {'Type': 'broadcast', 'LocalName': args.get('name', 'FOREIGN'),
                    'ServiceUUIDs': uuids},
          'uuids': uuids, 'name': args.get('name', 'FOREIGN'),
          'address': f'C0:DF:{idx // 256:02X}:{idx % 256:02X}:00:{n % 256:02X}'}
    _added(st, key, ad)
    return {'path': key[1], 'on_air': _on_air(st, key)}


def _remove_foreign(args):
    st = AIR['adapters'][args['adapter']]
    gone = [k for k in st['ads'] if k[0] == ':foreign']
    for k in gone:
        _removed(st, k)
    if gone:
        _refresh_manager(st)
    return {'removed': len(gone)}


def _inject(args):
    items = args['items'] if 'items' in args else [args]
    for it in items:
        AIR['stats']['injected'] += 1
        for _ in range(int(it.get('repeat', 1))):
            report(it['adapter'], it['address'], it.get('name'), it.get('uuids', []),
                   rssi=it.get('rssi'), order=it.get('order'),
                   extra_uuids=it.get('extra_uuids', []))
    return {'injected': len(items)}


def _devices(args):
    st = AIR['adapters'][args['adapter']]
    prefix = st['path'] + '/dev_'
    return {p: _plain(o.props[DEVICE_IFACE]) for p, o in mockobject.objects.items()
            if p.startswith(prefix)}


@dbus.service.method(MOCK_IFACE, in_signature='ss', out_signature='s')
def Control(_self, command, arguments):
    '''Test control: JSON in, JSON out (see the module docs).'''
    args = json.loads(arguments) if arguments else {}
    if command == 'add_adapter':
        out = add_adapter(args)
    elif command == 'configure':
        AIR['config'].update(args)
        _set_timer()
        out = AIR['config']
    elif command == 'advertisements':
        out = _advertisements(args)
    elif command == 'inject':
        out = _inject(args)
    elif command == 'devices':
        out = _devices(args)
    elif command == 'add_foreign':
        out = _add_foreign(args)
    elif command == 'remove_foreign':
        out = _remove_foreign(args)
    elif command == 'stats':
        out = AIR['stats']
    else:
        raise _err(MOCK_IFACE + '.UnknownCommand', f'unknown command {command}')
    return json.dumps(out)


def load(mock, parameters):
    bluez5.load(mock, parameters)
    if parameters:
        AIR['config'].update(_plain(parameters))
    _set_timer()
